"""MeetKai functionary: functions as a TypeScript namespace in a system message; v2 (default) or v1.

v2: every message is `<|from|>{role}\n<|recipient|>{recipient}\n<|content|>{text}`, messages joined by
newlines; the assistant writes its text to recipient `all` and each call as a further assistant message
whose recipient is the function and whose content is the JSON arguments; its turn ends with `<|stop|>`.
A function result comes `<|from|>{function name}`. A `{"type": "code_interpreter"}` tool adds
functionary's python system message; a call to `python` carries the raw code (canonically
`{"code": "..."}`), or that JSON object itself when the code is wrapped in braces like a JSON object.

v1: `system:` / `user:` / `assistant:` / `function name=...:` headers, each turn closed by its own
token (`<|END_OF_USER|>`, `<|END_OF_ASSISTANT|>`, ...), a call written
`<|START_OF_FUNCTION_CALL|>{name}:\n{arguments}<|END_OF_FUNCTION_CALL|>`, and functionary's default
system prompt when the conversation brings none.

Reproduces functionary's tests/prompt_test_v2.txt and prompt_test_v1.txt byte for byte.
"""

from __future__ import annotations

from polaris_dpo.formats.base import (
    CallSyntaxError,
    ChatFormat,
    arguments_text,
    assistant_message,
    decode_json_at,
    make_call,
    scan_calls,
    skip_space,
    with_legacy_call,
)
from polaris_dpo.formats.response import CALL_NAMED, json_calls, prose, response_template
from polaris_dpo.formats.typescript import JINJA_MACROS, has_functions, namespace

PYTHON_PROMPT = ("When you send a message containing Python code to python, it will be executed in a stateful "
                 "Jupyter notebook environment. python will respond with the output of the execution or time out "
                 "after 60.0 seconds. The drive at '/mnt/data' can be used to save and persist user files.")
DEFAULT_SYSTEM_V1 = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                     "helpful, detailed, and polite answers to the user's questions. The assistant calls functions "
                     "with appropriate input when necessary")

FROM, RECIPIENT, CONTENT, STOP = "<|from|>", "<|recipient|>", "<|content|>", "<|stop|>"
NEXT_CALL = "\n" + FROM + "assistant\n" + RECIPIENT  # between the parts of one v2 assistant turn
END_SYSTEM, END_USER, END_ASSISTANT = "<|END_OF_SYSTEM|>", "<|END_OF_USER|>", "<|END_OF_ASSISTANT|>"
END_RESULT, START_CALL, END_CALL = "<|END_OF_FUNCTION_RESULT|>", "<|START_OF_FUNCTION_CALL|>", "<|END_OF_FUNCTION_CALL|>"
TOOL_ROLES = ("tool", "function", "fn")

_CALL_ARGUMENTS = r"""
{%- macro call_arguments(fn) -%}
{%- set arguments = fn['arguments'] if fn['arguments'] is defined and fn['arguments'] is not none else {} -%}
{%- if fn['name'] == 'python' and arguments is mapping and arguments|length == 1 and arguments['code'] is string
      and not ((arguments['code']|trim)[:1] == '{' and (arguments['code']|trim)[-1:] == '}') -%}
{{- arguments['code'] -}}
{%- else -%}
{{- arguments if arguments is string else arguments|tojson -}}
{%- endif -%}
{%- endmacro -%}
"""

TEMPLATE_V2 = JINJA_MACROS + _CALL_ARGUMENTS + r"""
{%- set ns = namespace(started=false) -%}
{%- if has_functions(tools) -%}
{{- '<|from|>system\n<|recipient|>all\n<|content|>' + ts_namespace(tools) -}}
{%- set ns.started = true -%}
{%- endif -%}
{%- for tool in tools or [] -%}
{%- if tool['type'] == 'code_interpreter' -%}
{{- ('\n' if ns.started else '') + '<|from|>system\n<|recipient|>all\n<|content|>' + PYTHON_PROMPT -}}
{%- set ns.started = true -%}
{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
{{- '\n' if ns.started else '' -}}
{%- set ns.started = true -%}
{%- if message['role'] == 'assistant' -%}
{{- '<|from|>assistant\n<|recipient|>' -}}
{%- generation -%}
{%- set parts = namespace(first=true) -%}
{%- if message['content'] -%}
{{- 'all\n<|content|>' + message['content'] -}}
{%- set parts.first = false -%}
{%- endif -%}
{%- for call in message['tool_calls'] or [] -%}
{{- ('' if parts.first else '\n<|from|>assistant\n<|recipient|>') + call['function']['name'] + '\n<|content|>' + call_arguments(call['function']) -}}
{%- set parts.first = false -%}
{%- endfor -%}
{{- ('all\n<|content|>' if parts.first else '') + '<|stop|>' -}}
{%- endgeneration -%}
{%- elif message['role'] in ['tool', 'function', 'fn'] -%}
{{- '<|from|>' + (message['name'] or '') + '\n<|recipient|>all\n<|content|>' + (message['content'] or '') -}}
{%- else -%}
{{- '<|from|>' + message['role'] + '\n<|recipient|>all\n<|content|>' + (message['content'] or '') -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- ('\n' if ns.started else '') + '<|from|>assistant\n<|recipient|>' -}}
{%- endif -%}
""".replace("PYTHON_PROMPT", "'" + PYTHON_PROMPT.replace("'", "\\'") + "'")

TEMPLATE_V1 = JINJA_MACROS + _CALL_ARGUMENTS + r"""
{%- set ns = namespace(started=false) -%}
{%- if has_functions(tools) -%}
{{- 'system:\n' + ts_namespace(tools) + '<|END_OF_SYSTEM|>' -}}
{%- set ns.started = true -%}
{%- endif -%}
{%- if not messages or messages[0]['role'] != 'system' -%}
{{- ('\n' if ns.started else '') + 'system:\n' + DEFAULT_SYSTEM + '<|END_OF_SYSTEM|>' -}}
{%- set ns.started = true -%}
{%- endif -%}
{%- for message in messages -%}
{{- '\n' if ns.started else '' -}}
{%- set ns.started = true -%}
{%- if message['role'] == 'assistant' -%}
{{- 'assistant:\n' -}}
{%- generation -%}
{{- message['content'] or '' -}}
{%- if message['tool_calls'] -%}
{{- '\n' if message['content'] else '' -}}
{%- for call in message['tool_calls'] -%}
{{- '<|START_OF_FUNCTION_CALL|>' + call['function']['name'] + ':\n' + call_arguments(call['function']) + '<|END_OF_FUNCTION_CALL|>' -}}
{%- endfor -%}
{%- else -%}
{{- '<|END_OF_ASSISTANT|>' -}}
{%- endif -%}
{%- endgeneration -%}
{%- elif message['role'] in ['tool', 'function', 'fn'] -%}
{{- 'function name=' + (message['name'] or '') + ':\n' + (message['content'] or '') + '<|END_OF_FUNCTION_RESULT|>' -}}
{%- elif message['role'] == 'user' -%}
{{- 'user:\n' + (message['content'] or '') + '<|END_OF_USER|>' -}}
{%- else -%}
{{- message['role'] + ':\n' + (message['content'] or '') + '<|END_OF_SYSTEM|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- ('\n' if ns.started else '') + 'assistant:\n' -}}
{%- endif -%}
""".replace("DEFAULT_SYSTEM", "'" + DEFAULT_SYSTEM_V1.replace("'", "\\'") + "'")


# Raw python code is not JSON: allow_non_json gives it back as the arguments string (parse gives {"code": ...}).
ARGUMENTS_OR_CODE = {"allow_non_json": True}
_V2_PART_END = r"\n<\|from\|>assistant\n<\|recipient\|>|<\|stop\|>"
RESPONSE_TEMPLATE_V2 = response_template(
    FROM + "assistant\n" + RECIPIENT, prose(open="all\n" + CONTENT, close_pattern=_V2_PART_END),
    json_calls(CALL_NAMED, open_pattern=r"(?!all\n)[ \t]*(?P<name>[^\n]+?)[ \t]*\n<\|content\|>",
               close_pattern=_V2_PART_END, content_args=ARGUMENTS_OR_CODE))
RESPONSE_TEMPLATE_V1 = response_template(
    "assistant:\n", prose(close=END_ASSISTANT),
    json_calls(CALL_NAMED, open_pattern=r"\s*<\|START_OF_FUNCTION_CALL\|>[ \t]*(?P<name>[^\n]+?)[ \t]*:\n",
               close=END_CALL, content_args=ARGUMENTS_OR_CODE))


def call_arguments(function: dict) -> str:
    """A call's arguments as written: raw code for python (unless it reads like a JSON object), else JSON."""
    arguments = function.get("arguments")
    arguments = {} if arguments is None else arguments
    if (function["name"] == "python" and isinstance(arguments, dict) and list(arguments) == ["code"]
            and isinstance(arguments["code"], str) and not _braced(arguments["code"])):
        return arguments["code"]
    return arguments_text(arguments)


def _braced(code: str) -> bool:
    """Whether code is wrapped in braces, as every JSON object is: such code is written as {"code": ...},
    since the parser would read it as the call's JSON arguments."""
    code = code.strip()
    return code[:1] == "{" and code[-1:] == "}"


def _python_or_json_call(name: str, text: str, start: int, ends: tuple[str, ...]) -> tuple[dict, int]:
    """A call's arguments at `start`: a JSON object, or (for python) raw code running to the first of `ends`
    (code may start with `{` too: a dict or set literal)."""
    if name != "python":
        arguments, end = decode_json_at(text, start)
        return make_call(name, arguments), end
    stops = [i for i in (text.find(marker, start) for marker in ends) if i >= 0]
    code_end = min(stops, default=len(text))
    try:
        arguments, end = decode_json_at(text, start)
        if isinstance(arguments, dict) and not text[end:code_end].strip():
            return make_call(name, arguments), end
    except CallSyntaxError:
        pass
    return make_call(name, {"code": text[start:code_end]}), code_end


class Format(ChatFormat):
    name = "functionary"
    OPTIONS = ("version",)

    def __init__(self, version: str = "v2"):
        if version not in ("v2", "v1"):
            raise ValueError(f"functionary: version={version!r}: expected v2 or v1")
        self.version = version
        if version == "v2":
            self.special_tokens = [FROM, RECIPIENT, CONTENT, STOP]
            self.eos_token, self.stop_strings = STOP, []
            self.chat_template = TEMPLATE_V2.strip()
            self.response_template = RESPONSE_TEMPLATE_V2
        else:
            self.special_tokens = [END_SYSTEM, END_USER, END_ASSISTANT, END_RESULT, START_CALL, END_CALL]
            self.eos_token, self.stop_strings = END_ASSISTANT, [END_CALL]
            self.chat_template = TEMPLATE_V1.strip()
            self.response_template = RESPONSE_TEMPLATE_V1

    # ------------------------------------------------------------ rendering

    def render_assistant(self, message: dict) -> str:
        message = with_legacy_call(message)
        content = message.get("content") or ""
        calls = message.get("tool_calls") or []
        if self.version == "v1":
            if not calls:
                return content + END_ASSISTANT
            return content + ("\n" if content else "") + "".join(
                START_CALL + c["function"]["name"] + ":\n" + call_arguments(c["function"]) + END_CALL for c in calls)
        parts = ["all\n" + CONTENT + content] if content else []
        parts += [c["function"]["name"] + "\n" + CONTENT + call_arguments(c["function"]) for c in calls]
        return (NEXT_CALL.join(parts) if parts else "all\n" + CONTENT) + STOP

    def _render_message(self, message: dict) -> str:
        role = message["role"]
        content = message.get("content") or ""
        if self.version == "v1":
            if role == "assistant":
                return "assistant:\n" + self.render_assistant(message)
            if role in TOOL_ROLES:
                return "function name=" + (message.get("name") or "") + ":\n" + content + END_RESULT
            return role + ":\n" + content + (END_USER if role == "user" else END_SYSTEM)
        if role == "assistant":
            return FROM + "assistant\n" + RECIPIENT + self.render_assistant(message)
        sender = (message.get("name") or "") if role in TOOL_ROLES else role
        return FROM + sender + "\n" + RECIPIENT + "all\n" + CONTENT + content

    def render(self, messages, tools=None, add_generation_prompt=False) -> str:
        parts = []
        if self.version == "v1":
            if has_functions(tools):
                parts.append("system:\n" + namespace(tools) + END_SYSTEM)
            if not messages or messages[0]["role"] != "system":
                parts.append("system:\n" + DEFAULT_SYSTEM_V1 + END_SYSTEM)
        else:
            if has_functions(tools):
                parts.append(FROM + "system\n" + RECIPIENT + "all\n" + CONTENT + namespace(tools))
            for tool in tools or []:
                if tool.get("type") == "code_interpreter":
                    parts.append(FROM + "system\n" + RECIPIENT + "all\n" + CONTENT + PYTHON_PROMPT)
        parts += [self._render_message(with_legacy_call(m, f"messages[{i}]")) for i, m in enumerate(messages)]
        if add_generation_prompt:
            parts.append("assistant:\n" if self.version == "v1" else FROM + "assistant\n" + RECIPIENT)
        return "\n".join(parts)

    # ------------------------------------------------------------ parsing

    def parse_strict(self, text: str) -> dict:
        return self._parse_v1(text) if self.version == "v1" else self._parse_v2(text)

    def _parse_v2(self, text: str) -> dict:
        head = FROM + "assistant\n" + RECIPIENT
        if text.startswith(head):
            text = text[len(head):]
        prose, calls, position = [], [], 0
        while True:
            marker = text.find("\n" + CONTENT, position)
            if marker < 0:
                raise CallSyntaxError(f"part {len(prose) + len(calls) + 1}: recipient without {CONTENT}",
                                      text[position:position + 200])
            recipient = text[position:marker].strip()
            if not recipient or "\n" in recipient:
                raise CallSyntaxError(f"part {len(prose) + len(calls) + 1}: no recipient", text[position:marker])
            start = marker + len(CONTENT) + 1
            if recipient == "all":
                stops = [i for i in (text.find(NEXT_CALL, start), text.find(STOP, start)) if i >= 0]
                end = min(stops, default=len(text))
                prose.append(text[start:end])
            else:
                try:
                    call, end = _python_or_json_call(recipient, text, start, (NEXT_CALL, STOP))
                except CallSyntaxError as err:
                    raise CallSyntaxError(f"call {len(calls) + 1} ({recipient}): {err.reason}", err.fragment) from None
                calls.append(call)
                end = _space_after_call(text, end)
            if text.startswith(NEXT_CALL, end):
                position = end + len(NEXT_CALL)
                continue
            rest = text[end:]
            if rest.startswith(STOP) or not rest.strip():
                return assistant_message("".join(prose), calls)
            raise CallSyntaxError(f"text after call {len(calls)}", rest[:200])

    def _parse_v1(self, text: str) -> dict:
        outside, calls = scan_calls(text, lambda text, position: text.find(START_CALL, position), _read_v1_call,
                                    stop=END_ASSISTANT)
        if END_CALL in outside:
            raise CallSyntaxError(f"unbalanced {END_CALL}: no {START_CALL} before it", outside[:200])
        return assistant_message(outside, calls)


def _space_after_call(text: str, end: int) -> int:
    """`end` moved over whitespace after a call's JSON, up to the next part (whose separator starts with a
    line break) or <|stop|>."""
    after = skip_space(text, end)
    return after - 1 if after > end and text.startswith(NEXT_CALL, after - 1) else after


def _read_v1_call(text: str, found: int, number: int) -> tuple[dict, int]:
    """The v1 call `START_CALL name:\n arguments END_CALL` at `found`, and the index after it."""
    colon = text.find(":\n", found)
    name = text[found + len(START_CALL):colon] if colon >= 0 else ""
    if not name.strip() or "\n" in name:
        raise CallSyntaxError(f"call {number}: no `name:` after {START_CALL}", text[found:found + 200])
    try:
        call, end = _python_or_json_call(name.strip(), text, colon + 2, (END_CALL,))
    except CallSyntaxError as err:
        raise CallSyntaxError(f"call {number} ({name.strip()}): {err.reason}", err.fragment) from None
    end = skip_space(text, end)
    if text.startswith(END_CALL, end):
        end += len(END_CALL)
    elif end < len(text):  # generation may stop on END_CALL and drop it; anything else is malformed
        raise CallSyntaxError(f"call {number}: {START_CALL} without {END_CALL}", text[found:found + 200])
    return call, end
