"""The contract every format module fulfils.

Canonical messages (see polaris_dpo.messages): dicts with `role` in system | user | assistant | tool,
`content` (str or None), for assistant turns optional `tool_calls` =
[{"type": "function", "function": {"name": str, "arguments": dict}}, ...] (arguments always a dict in
memory), for tool turns `name` and optional `tool_call_id`. `tools` is a list of OpenAI-style
{"type": "function", "function": {"name", "description", "parameters"}} definitions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from polaris_dpo.messages import lone_surrogate_field, normalize_message


@dataclass(frozen=True)
class ParseError:
    """Why generated text is not a well-formed assistant message (the judge's malformed_call)."""

    reason: str  # e.g. "invalid JSON in call 1: Expecting ',' delimiter", "unbalanced <|fn_start|>"
    fragment: str = ""  # the offending piece of text


def with_legacy_call(message: dict, field: str = "message") -> dict:
    """`message` with OpenAI's legacy `function_call` made one of its `tool_calls` (by messages' normaliser,
    which raises FieldError naming the field when it is not a call); other messages as they are."""
    return normalize_message(message, field) if message.get("function_call") is not None else message


def with_legacy_calls(messages: list[dict]) -> list[dict]:
    """Every message through `with_legacy_call`, each named by its place for the error."""
    return [with_legacy_call(m, f"messages[{i}]") for i, m in enumerate(messages)]


class ChatFormat:
    """Base class of a format. Subclasses set the class attributes and implement render, render_assistant and parse_strict."""

    name: str = ""
    OPTIONS: tuple[str, ...] = ()  # FormatConfig fields this format takes as keyword arguments
    special_tokens: list[str] = []  # tokens added to the tokenizer (new embedding rows, trained with LoRA)
    eos_token: str = ""  # the token that ends an assistant turn (generation stops on it; loss covers it)
    stop_strings: list[str] = []  # further strings that end generation
    chat_template: str | None = None  # Jinja template with {% generation %} markers around assistant output
    response_template: dict | None = None  # its inverse for tokenizer.parse_response (see formats/response.py)

    def render(self, messages: list[dict], tools: list[dict] | None = None,
               add_generation_prompt: bool = False) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> dict:
        """Generated text -> {"role": "assistant", "content": str | None, "tool_calls": [...]}.

        Never raises on model output: text that starts a call but does not parse comes back with
        "parse_error": ParseError(...) and the raw text as content. An empty or blank output is
        no answer in every format, even those whose turns open with a header the model writes.
        """
        if not text.strip():
            return {"role": "assistant", "content": None}
        try:
            return self.parse_strict(text)
        except CallSyntaxError as err:
            return parse_failure(text, err.reason, err.fragment)

    def parse_strict(self, text: str) -> dict:
        """Like parse, but a call that does not parse raises CallSyntaxError."""
        raise NotImplementedError

    def render_assistant(self, message: dict) -> str:
        """The text the model should generate for one assistant message (up to and including eos)."""
        raise NotImplementedError


# ---------------------------------------------------------------- helpers shared by the format modules

def dumps(value) -> str:
    """JSON exactly as the chat templates' `tojson` filter writes it (transformers: ensure_ascii=False)."""
    return json.dumps(value, ensure_ascii=False)


def arguments_text(arguments) -> str:
    """Call arguments as JSON text: a string is taken as already-encoded JSON, a mapping is encoded."""
    return arguments if isinstance(arguments, str) else dumps(arguments)


def function_of(tool: dict) -> dict:
    """The function definition inside an OpenAI tool ({"type": "function", "function": {...}}), or a bare one."""
    return tool["function"] if "function" in tool else tool


def jinja_literal(text: str) -> str:
    """`text` as a Jinja string literal (for baking a format's options into its template)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


JINJA_HELPERS = r"""
{%- macro arguments_json(fn) -%}
{%- set arguments = fn['arguments'] if fn['arguments'] is defined and fn['arguments'] is not none else {} -%}
{{- arguments if arguments is string else arguments|tojson -}}
{%- endmacro -%}
{%- macro function_json(tool) -%}
{{- (tool['function'] if tool['function'] is defined else tool)|tojson -}}
{%- endmacro -%}
"""  # macros of the chat templates: a call's arguments as JSON text, a tool's function schema as JSON


def jinja_split_system(default: str) -> str:
    """Jinja that sets `system` (the leading system message's content, else `default`) and `loop_messages`."""
    return ("\n{%- if messages and messages[0]['role'] == 'system' -%}"
            "\n{%- set system = messages[0]['content'] or '' -%}"
            "\n{%- set loop_messages = messages[1:] -%}"
            "\n{%- else -%}"
            "\n{%- set system = " + jinja_literal(default) + " -%}"
            "\n{%- set loop_messages = messages -%}"
            "\n{%- endif -%}")


def assistant_message(content: str | None, calls: list[dict]) -> dict:
    """A parsed assistant message: content stripped (None when empty), tool_calls only when there are calls."""
    content = (content or "").strip() or None
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return message


def parse_failure(text: str, reason: str, fragment: str = "") -> dict:
    """What parse returns for text that starts a call but does not parse: the raw text and the reason."""
    return {"role": "assistant", "content": text.strip() or None,
            "parse_error": ParseError(reason, fragment[:200])}


class CallSyntaxError(ValueError):
    """A call that does not parse; turned into ParseError by the format's parse."""

    def __init__(self, reason: str, fragment: str = ""):
        super().__init__(reason)
        self.reason, self.fragment = reason, fragment


def make_call(name, arguments) -> dict:
    """A canonical tool call from a decoded name and arguments (a mapping, or a JSON string of one)."""
    if not isinstance(name, str) or not name:
        raise CallSyntaxError(f"call has no function name (got {name!r})")
    if lone_surrogate_field(name) is not None:
        raise CallSyntaxError(f"the function name {name!r} holds a lone UTF-16 surrogate, which is not valid Unicode")
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = decode_json(arguments) if arguments.strip() else {}
        except CallSyntaxError as err:
            raise CallSyntaxError(f"arguments of {name!r}: {err.reason}", arguments[:200]) from None
    if not isinstance(arguments, dict):
        raise CallSyntaxError(f"arguments of {name!r} must be a JSON object, got {type(arguments).__name__}")
    if lone_surrogate_field(arguments) is not None:
        raise CallSyntaxError(f"arguments of {name!r} hold a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                              "escape), which is not valid Unicode")
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def call_from_json(obj, name_key: str = "name", arguments_key: str = "arguments") -> dict:
    """A canonical call from a decoded {"name": ..., "arguments": ...} object."""
    if not isinstance(obj, dict):
        raise CallSyntaxError(f"a call must be a JSON object, got {type(obj).__name__}")
    arguments = obj.get(arguments_key, obj.get("parameters"))
    return make_call(obj.get(name_key), arguments)


class _NotJSON(ValueError):
    """Text Python's json reads but JSON does not allow (raised by the strict decoder's hooks)."""


def _reject_constant(name: str):
    raise _NotJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJSON(f"{text[:40]} overflows to infinity")
    return value


def _bounded_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # longer than sys.get_int_max_str_digits()
        raise _NotJSON(f"a number of {len(digits)} digits is too long") from None


# Python's json also reads NaN, Infinity and -Infinity, numbers that overflow to infinity and (with a
# plain ValueError) integers of more than 4,300 digits: model output holding any of them is not a call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)


def _strictly(decode, text: str, *args):
    """decode(text, *args) with every way the strict decoder rejects text raised as CallSyntaxError."""
    try:
        return decode(text, *args)
    except json.JSONDecodeError as err:
        reason = err.msg
    except _NotJSON as err:
        reason = str(err)
    except RecursionError:
        reason = "nested too deeply"
    raise CallSyntaxError(f"invalid JSON: {reason}")


def decode_json(text: str):
    """The JSON value `text` holds (whitespace around it allowed), decoded strictly, or CallSyntaxError."""
    return _strictly(_DECODER.decode, text)


def skip_space(text: str, position: int) -> int:
    """The first index at or after `position` that is not a space, tab or line break."""
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def decode_json_at(text: str, position: int):
    """(value, end) of the JSON value starting at `position` (whitespace skipped), or CallSyntaxError."""
    position = skip_space(text, position)
    try:
        return _strictly(_DECODER.raw_decode, text, position)
    except CallSyntaxError as err:
        raise CallSyntaxError(err.reason, text[position:position + 200]) from None


def scan_calls(text: str, find_call, read_call, stop: str | None = None) -> tuple[str, list[dict]]:
    """Split `text` into prose and calls, left to right, up to `stop` (the end-of-turn token) outside a call.

    `find_call(text, position)` is the index of the next call (-1: none); `read_call(text, index, number)`
    reads the call found there and returns (call, index after it), or raises CallSyntaxError.
    """
    prose, calls, position = [], [], 0
    while True:
        found = find_call(text, position)
        stopped = text.find(stop, position) if stop else -1
        if stopped >= 0 and (found < 0 or stopped < found):
            prose.append(text[position:stopped])
            break
        if found < 0:
            prose.append(text[position:])
            break
        prose.append(text[position:found])
        call, position = read_call(text, found, len(calls) + 1)
        calls.append(call)
    return "".join(prose), calls


def scan_delimited_calls(text: str, start: str, end: str | None, decode=call_from_json,
                         stop: str | None = None) -> tuple[str, list[dict]]:
    """Split `text` into prose and calls written `start JSON end` (end None: the JSON alone ends the call).

    The JSON is decoded before looking for `end`, so call tokens inside argument strings are harmless;
    `stop` (the end-of-turn token) outside a call ends the text. Raises CallSyntaxError for a call that
    does not parse or an `end` with no `start`.
    """
    def read_call(text: str, found: int, number: int) -> tuple[dict, int]:
        try:
            obj, after = decode_json_at(text, found + len(start))
            call = decode(obj)
        except CallSyntaxError as err:
            raise CallSyntaxError(f"call {number}: {err.reason}", text[found:found + 200]) from None
        after = skip_space(text, after)
        if end is not None:
            if not text.startswith(end, after):
                raise CallSyntaxError(f"call {number}: {start} without {end}", text[found:found + 200])
            after += len(end)
        return call, after

    outside, calls = scan_calls(text, lambda text, position: text.find(start, position), read_call, stop)
    if end is not None and end in outside:
        raise CallSyntaxError(f"unbalanced {end}: no {start} before it", outside)
    return outside, calls
