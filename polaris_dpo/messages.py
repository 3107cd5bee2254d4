"""The canonical conversation: OpenAI-style messages and tools, normalised from the legacy shapes.

In memory a message is `{"role": system|user|assistant|tool, "content": str | None}`, assistant turns
may carry `tool_calls` = [{"type": "function", "function": {"name", "arguments": dict}}] (plus an
optional `id`), tool turns carry `name` and optionally `tool_call_id`. `tools` is a list of
{"type": "function", "function": {"name", "description", "parameters"}} with JSON-schema parameters.

`normalize_*` accept what real data holds: `functions` / `function_call`, the `function` and Polaris
`fn` roles, `arguments` as an object or a JSON string, tool definitions bare or wrapped, BFCL's
schema types. Anything that cannot be made canonical raises `FieldError` (a `ValueError`) naming the field.
`to_storage` / `from_storage` convert to and from stored rows, where arguments, tools, acceptable
values and preferences are JSON strings (`datasets` would otherwise fill missing keys with null).

Plain Python on purpose: no torch, no transformers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
LEGACY_TOOL_ROLES = ("function", "fn")  # OpenAI's old function-result role, Polaris' `fn`

# Schema types seen in BFCL (Python, Java, JavaScript categories) -> JSON-schema types; None drops `type`.
SCHEMA_TYPES: dict[str, str | None] = {
    **{t: t for t in ("string", "number", "integer", "boolean", "array", "object", "null")},
    "dict": "object", "float": "number", "tuple": "array", "any": None, "": None,
    "int": "integer", "bool": "boolean", "str": "string", "list": "array",
    "String": "string", "char": "string", "Boolean": "boolean", "long": "integer", "double": "number",
    "Array": "array", "ArrayList": "array", "HashMap": "object",
}
_SCHEMA_CHILD_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_CHILD_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_CHILDREN = ("items", "additionalProperties", "not")


class FieldError(ValueError):
    """A value that cannot be made canonical: `field` is where it is (dotted path), `reason` what is wrong."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


# ---------------------------------------------------------------- tools and schemas

def normalize_schema(schema: Any, field: str = "parameters") -> dict:
    """A JSON-schema copy of `schema` with BFCL / Java / JavaScript type names mapped to JSON types."""
    if not isinstance(schema, dict):
        raise FieldError(field, f"a JSON schema must be an object, got {type(schema).__name__}")
    out = dict(schema)
    if "type" in schema:
        kind = schema["type"]
        kinds = kind if isinstance(kind, list) else [kind]
        mapped = []
        for k in kinds:
            if not isinstance(k, str) or k not in SCHEMA_TYPES:
                raise FieldError(f"{field}.type", f"unknown schema type {k!r}")
            if SCHEMA_TYPES[k] is not None:
                mapped.append(SCHEMA_TYPES[k])
        if not mapped:
            del out["type"]
        else:
            out["type"] = mapped if isinstance(kind, list) else mapped[0]
    for key in _SCHEMA_CHILD_MAPS:
        if isinstance(schema.get(key), dict):
            out[key] = {name: normalize_schema(sub, f"{field}.{key}.{name}") for name, sub in schema[key].items()}
    _normalize_required(schema, out, field)
    for key in _SCHEMA_CHILD_LISTS:
        if isinstance(schema.get(key), list):
            out[key] = [normalize_schema(sub, f"{field}.{key}[{i}]") for i, sub in enumerate(schema[key])]
    for key in _SCHEMA_CHILDREN:
        sub = schema.get(key)
        if isinstance(sub, dict):
            out[key] = normalize_schema(sub, f"{field}.{key}")
        elif key == "items" and isinstance(sub, list):  # draft-4 tuple form
            out[key] = [normalize_schema(s, f"{field}.items[{i}]") for i, s in enumerate(sub)]
    return out


def _normalize_required(schema: dict, out: dict, field: str) -> None:
    """`required` as a list of names; draft-3's `"required": true` on a property joins its parent's list."""
    required = schema.get("required")
    if isinstance(required, bool):
        del out["required"]  # draft 3: the parent lists this property (below, one level up)
    elif required is not None and (not isinstance(required, list) or not all(isinstance(n, str) for n in required)):
        raise FieldError(f"{field}.required", f"must be a list of property names, got {required!r:.80}")
    properties = schema.get("properties")
    if isinstance(properties, dict):
        flagged = [name for name, sub in properties.items() if isinstance(sub, dict) and sub.get("required") is True]
        if flagged:
            out["required"] = list(dict.fromkeys([*(out.get("required") or []), *flagged]))


def normalize_tool(tool: Any, field: str = "tools[0]") -> dict:
    """One tool definition, bare ({"name", ...}) or wrapped ({"type": "function", "function": {...}})."""
    if isinstance(tool, str):
        tool = load_json(tool, field)
    if not isinstance(tool, dict):
        raise FieldError(field, f"a tool must be an object, got {type(tool).__name__}")
    if "function" in tool:
        if tool.get("type", "function") != "function":
            raise FieldError(f"{field}.type", f"a tool with `function` must have type 'function', got {tool['type']!r}")
        definition, where = tool["function"], f"{field}.function"
    elif "name" in tool:
        definition, where = tool, field
    elif isinstance(tool.get("type"), str):
        return dict(tool)  # a built-in tool such as functionary's {"type": "code_interpreter"}: kept as given
    else:
        raise FieldError(f"{field}.name", "a tool definition needs a name")
    if not isinstance(definition, dict):
        raise FieldError(where, f"must be an object, got {type(definition).__name__}")
    name = definition.get("name")
    if not isinstance(name, str) or not name:
        raise FieldError(f"{where}.name", f"a function needs a non-empty string name, got {name!r}")
    function = {k: v for k, v in definition.items() if k != "type" or where != field}
    if function.get("description") is None:
        function.pop("description", None)
    parameters = definition.get("parameters")
    function["parameters"] = (normalize_schema(parameters, f"{where}.parameters") if parameters is not None
                              else {"type": "object", "properties": {}})
    return {"type": "function", "function": function}


def normalize_tools(tools: Any, field: str = "tools") -> list[dict]:
    """A tools list from a list, a JSON string of one, a list of JSON strings, or None (no tools)."""
    if tools is None:
        return []
    if isinstance(tools, str):
        tools = load_json(tools, field) if tools.strip() else []
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise FieldError(field, f"must be a list of tool definitions, got {type(tools).__name__}")
    return [normalize_tool(tool, f"{field}[{i}]") for i, tool in enumerate(tools)]


# ---------------------------------------------------------------- messages

CODE_INTERPRETER = "python"


def normalize_arguments(arguments: Any, field: str) -> dict:
    """Call arguments as a dict, from a dict, a JSON string of an object, or nothing."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        arguments = load_json(arguments, field)
    if not isinstance(arguments, dict):
        raise FieldError(field, f"arguments must be a JSON object, got {type(arguments).__name__}")
    try:
        json.dumps(arguments, allow_nan=False, default=str)
    except ValueError:  # Python's json reads NaN, Infinity and 1e999; JSON has no such numbers
        raise FieldError(field, "arguments hold NaN or an infinite number, which JSON does not allow") from None
    return arguments


def normalize_call(call: Any, field: str) -> dict:
    """One tool call, wrapped ({"function": {...}}) or flat ({"name", "arguments"}), arguments in any form."""
    if isinstance(call, str):
        call = load_json(call, field)
    if not isinstance(call, dict):
        raise FieldError(field, f"a call must be an object, got {type(call).__name__}")
    function, where = (call["function"], f"{field}.function") if "function" in call else (call, field)
    if not isinstance(function, dict):
        raise FieldError(where, f"must be an object, got {type(function).__name__}")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise FieldError(f"{where}.name", f"a call needs a non-empty string name, got {name!r}")
    if "arguments" in function:
        arguments = function["arguments"]
    else:
        arguments = function.get("parameters")  # some datasets write calls with `parameters`
    if name == CODE_INTERPRETER and isinstance(arguments, str) and not _is_json_object(arguments):
        arguments = {"code": arguments}  # code-interpreter calls carry raw code, not JSON (functionary, OpenAI)
    out = {"type": "function",
           "function": {"name": name, "arguments": normalize_arguments(arguments, f"{where}.arguments")}}
    if call.get("id") is not None:
        out["id"] = str(call["id"])
    return out


def normalize_content(content: Any, field: str) -> str | None:
    """Message text: a string, None, or OpenAI content parts of type text (joined)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise FieldError(f"{field}[{i}]", f"only text content parts are supported, got {part!r:.80}")
        return "\n".join(texts)  # as vLLM's OpenAI server joins text parts
    raise FieldError(field, f"content must be a string or null, got {type(content).__name__}")


def normalize_message(message: Any, field: str = "messages[0]") -> dict:
    """One message in canonical form (a tool result's name may still be missing: see normalize_messages)."""
    if not isinstance(message, dict):
        raise FieldError(field, f"a message must be an object, got {type(message).__name__}")
    role = message.get("role")
    if role is None:
        raise FieldError(f"{field}.role", "missing")
    if role in LEGACY_TOOL_ROLES:
        role = "tool"
    if role not in ROLES:
        raise FieldError(f"{field}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES + LEGACY_TOOL_ROLES)})")
    content = message.get("content")
    if role == "tool" and not isinstance(content, str) and content is not None and not isinstance(content, list):
        content = json.dumps(content, ensure_ascii=False)  # a result given as a JSON value
    content = normalize_content(content, f"{field}.content")
    out: dict[str, Any] = {"role": role, "content": content}
    if role in ("system", "user") and content is None:
        raise FieldError(f"{field}.content", f"a {role} message needs text")
    if role == "assistant":
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise FieldError(f"{field}.tool_calls", f"must be a list, got {type(calls).__name__}")
        calls = [normalize_call(c, f"{field}.tool_calls[{i}]") for i, c in enumerate(calls or [])]
        if message.get("function_call") is not None:
            calls.append(normalize_call(message["function_call"], f"{field}.function_call"))
        if calls:
            out["tool_calls"] = calls
    if role == "tool":
        if content is None:
            raise FieldError(f"{field}.content", "a tool result needs content")
        if message.get("name") is not None:
            if not isinstance(message["name"], str):
                raise FieldError(f"{field}.name", f"must be a string, got {type(message['name']).__name__}")
            out["name"] = message["name"]
        if message.get("tool_call_id") is not None:
            out["tool_call_id"] = str(message["tool_call_id"])
    return out


def normalize_messages(messages: Any, field: str = "messages") -> list[dict]:
    """A canonical message list; tool results without a name take it from the call they answer."""
    if isinstance(messages, str):
        messages = load_json(messages, field)
    if not isinstance(messages, list):
        raise FieldError(field, f"must be a list of messages, got {type(messages).__name__}")
    out = [normalize_message(m, f"{field}[{i}]") for i, m in enumerate(messages)]
    pending: list[dict] = []  # calls of the latest assistant turn not yet answered, in order
    for i, message in enumerate(out):
        if message["role"] == "assistant":
            pending = list(message.get("tool_calls", []))
        elif message["role"] == "tool":
            answered = _answered_call(message, pending)
            if answered is not None:
                pending.remove(answered)
                message.setdefault("name", answered["function"]["name"])
            elif "name" not in message:
                raise FieldError(f"{field}[{i}].name", "a tool result with no name answers no earlier call")
    return out


def _answered_call(message: dict, pending: list[dict]) -> dict | None:
    for key, value in (("id", message.get("tool_call_id")), ("name", message.get("name"))):
        if value is not None:
            for call in pending:
                if (call.get("id") if key == "id" else call["function"]["name"]) == value:
                    return call
    if "tool_call_id" not in message and "name" not in message and pending:
        return pending[0]
    return None


def normalize_conversation(conversation: dict) -> dict:
    """A conversation with canonical messages and tools (legacy `functions` merged into `tools`)."""
    messages = normalize_messages(conversation.get("messages"), "messages")
    tools = normalize_tools(conversation.get("tools"), "tools")
    if conversation.get("functions") is not None:
        tools += normalize_tools(conversation["functions"], "functions")
    out = {k: v for k, v in conversation.items() if k != "functions"}
    out["messages"], out["tools"] = messages, tools
    out.setdefault("acceptable", None)
    out.setdefault("preferences", None)
    return out


# ---------------------------------------------------------------- storage form

_MESSAGE_LIST_KEYS = ("messages", "prompt", "chosen", "rejected")
_MESSAGE_KEYS = ("reference",)
_JSON_KEYS = ("acceptable", "preferences")


def to_storage(obj: Any) -> Any:
    """Storage form of a message, a message list, or a row (conversation, example, pair).

    In a row, message lists (`messages`, `prompt`, `chosen`, `rejected`) and `reference` get their
    call arguments as JSON strings; `tools`, `acceptable`, `preferences` become JSON strings.
    """
    if isinstance(obj, list):
        return [_message_to_storage(m) for m in obj]
    if not isinstance(obj, dict):
        raise ValueError(f"to_storage: expected a message, a list of messages or a row, got {type(obj).__name__}")
    if "role" in obj:
        return _message_to_storage(obj)
    row = dict(obj)
    for key in _MESSAGE_LIST_KEYS:
        if isinstance(row.get(key), list):
            row[key] = [_message_to_storage(m) for m in row[key]]
    for key in _MESSAGE_KEYS:
        if isinstance(row.get(key), dict):
            row[key] = _message_to_storage(row[key])
    if "tools" in row and not isinstance(row["tools"], str):
        row["tools"] = _dumps(row["tools"] or [])
    for key in _JSON_KEYS:
        if key in row and row[key] is not None and not isinstance(row[key], str):
            row[key] = _dumps(row[key])
    return row


def from_storage(obj: Any) -> Any:
    """In-memory form of what to_storage wrote (also accepts rows already in memory form)."""
    if isinstance(obj, list):
        return normalize_messages(obj)
    if not isinstance(obj, dict):
        raise ValueError(f"from_storage: expected a message, a list of messages or a row, got {type(obj).__name__}")
    if "role" in obj:
        return normalize_message(obj)
    row = dict(obj)
    for key in _MESSAGE_LIST_KEYS:
        if row.get(key) is not None:
            row[key] = normalize_messages(row[key], key)
    for key in _MESSAGE_KEYS:
        if isinstance(row.get(key), (dict, str)):
            value = load_json(row[key], key) if isinstance(row[key], str) else row[key]
            row[key] = normalize_message(value, key)
    if "tools" in row:
        row["tools"] = normalize_tools(row["tools"], "tools")
    for key in _JSON_KEYS:
        if isinstance(row.get(key), str):
            row[key] = load_json(row[key], key)
    return row


def _message_to_storage(message: dict) -> dict:
    out = dict(message)
    if out.get("tool_calls"):
        out["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": _arguments_string(call["function"]["arguments"])}}
            for call in out["tool_calls"]
        ]
    return out


def _arguments_string(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else _dumps(arguments)


# ---------------------------------------------------------------- prediction points

def examples(conversation: dict) -> Iterator[dict]:
    """The conversation's prediction points, one per assistant turn.

    A conversation whose last assistant turn is labelled (`acceptable` or `preferences` not None:
    BFCL, When2Call) yields only that turn: earlier assistant turns are given context, not targets.
    `position` says where the turn sits among the conversation's assistant turns: the first one is
    "first", a later final one "last", any other "middle".
    """
    messages = conversation["messages"]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    labelled = conversation.get("acceptable") is not None or conversation.get("preferences") is not None
    targets = turns[-1:] if labelled else turns
    for index in targets:
        rank = turns.index(index)
        position = "first" if rank == 0 else "last" if rank == len(turns) - 1 else "middle"
        is_last = index == turns[-1]
        yield {
            "id": f"{conversation['id']}#{index}",
            "conversation_id": conversation["id"],
            "source": conversation.get("source"),
            "row": conversation.get("row"),
            "prompt": messages[:index],
            "tools": conversation.get("tools") or [],
            "reference": messages[index],
            "acceptable": conversation.get("acceptable") if is_last else None,
            "preferences": conversation.get("preferences") if is_last else None,
            "position": position,
        }


# ---------------------------------------------------------------- JSON helpers

def load_json(text: str, field: str) -> Any:
    """The JSON value `text` holds, or FieldError naming `field` and why it cannot be read."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FieldError(field, f"not valid JSON ({err.msg} at char {err.pos}): {text[:80]!r}") from None
    except RecursionError:
        raise FieldError(field, f"JSON nested too deeply: {text[:80]!r}") from None
    except ValueError as err:  # an integer longer than Python's digit limit
        raise FieldError(field, f"not usable JSON ({err}): {text[:80]!r}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_field(value: Any, field: str = "") -> str | None:
    """The field (dotted path from `field`) of the first string or key in a decoded JSON value holding a
    lone UTF-16 surrogate, which UTF-8 cannot encode; None when there is none."""
    pending = [(value, field)]
    while pending:  # a loop, not recursion: decoded values may nest as deep as the decoder allows
        item, where = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                path = f"{where}.{key}" if where else str(key)
                children += [(key, path), (child, path)]
            pending.extend(reversed(children))
        elif isinstance(item, list):
            pending.extend(reversed([(child, f"{where}[{i}]") for i, child in enumerate(item)]))
    return None


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
