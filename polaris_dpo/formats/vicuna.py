"""airoboros / FastChat vicuna: `{system} USER: {user} ASSISTANT: {assistant}</s>USER: ...`.

Functions are listed in the system prompt, one JSON definition per line; the assistant calls one
with a line holding airoboros' call object `{"function": <name>, "params": {...}}`, after any prose
(read whatever its key order and spacing, pretty-printed too).
Function results come back as `FUNCTION RESULT: ...`. `context_prompt` builds airoboros'
context-obedient question (BEGININPUT / BEGINCONTEXT ... ENDINSTRUCTION) from documents with metadata.
"""

from __future__ import annotations

import re

from polaris_dpo.formats.base import (
    JINJA_HELPERS,
    CallSyntaxError,
    ChatFormat,
    arguments_text,
    assistant_message,
    call_from_json,
    decode_json_at,
    dumps,
    function_of,
    jinja_literal,
    jinja_split_system,
    scan_calls,
    with_legacy_call,
    with_legacy_calls,
)
from polaris_dpo.formats.response import json_calls, prose, response_template

EOS = "</s>"
_LINE_OPENING_BRACE = re.compile(r"^[ \t]*\{", re.MULTILINE)
_CALL_OPENING = re.compile(r'\{\s*"function"')
TOOL_ROLES = ("tool", "function", "fn")
DEFAULT_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                  "helpful, detailed, and polite answers to the user's questions.")
FUNCTIONS_INTRO = ("\n\nAvailable functions. To call one, answer with a line "
                   "{\"function\": <function name>, \"params\": <arguments object>}:\n")

TEMPLATE = JINJA_HELPERS + r"""
{%- macro render_call(fn) -%}
{{- '{"function": ' + fn['name']|tojson + ', "params": ' + arguments_json(fn) + '}' -}}
{%- endmacro -%}""" + jinja_split_system(DEFAULT_SYSTEM) + r"""
{{- system -}}
{%- if tools -%}
{{- FUNCTIONS_INTRO -}}
{%- for tool in tools -%}{{- function_json(tool) + ('\n' if not loop.last else '') -}}{%- endfor -%}
{%- endif -%}
{{- ' ' -}}
{%- for message in loop_messages -%}
{%- if message['role'] == 'assistant' -%}
{{- 'ASSISTANT:' -}}
{%- generation -%}
{%- set parts = namespace(first=true) -%}
{{- ' ' -}}
{%- if message['content'] -%}{{- message['content'] -}}{%- set parts.first = false -%}{%- endif -%}
{%- for call in message['tool_calls'] or [] -%}
{{- ('' if parts.first else '\n') + render_call(call['function']) -}}
{%- set parts.first = false -%}
{%- endfor -%}
{{- '</s>' -}}
{%- endgeneration -%}
{%- elif message['role'] in ['tool', 'function', 'fn'] -%}
{{- 'FUNCTION RESULT: ' + (message['content'] or '') + ' ' -}}
{%- else -%}
{{- message['role']|upper + ': ' + (message['content'] or '') + ' ' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- 'ASSISTANT:' -}}
{%- endif -%}
"""


TEMPLATE = TEMPLATE.replace("DEFAULT_SYSTEM", jinja_literal(DEFAULT_SYSTEM)).replace("FUNCTIONS_INTRO", jinja_literal(FUNCTIONS_INTRO))


# A call is a line that opens an object whose first key is "function" (parse also reads other key orders);
# it ends at the line break before the next such line, or at the end of the turn.
CALL_LINE = r'[ \t]*\{\s*"function"\s*:'
RESPONSE_TEMPLATE = response_template(
    "ASSISTANT:", prose(close=EOS),
    json_calls({"type": "function", "function": {"name": "{content.function}", "arguments": "{content.params}"}},
               open_pattern=r"(?<![^\n])(?=" + CALL_LINE + ")", close_pattern=r"\n(?=" + CALL_LINE + ")|</s>"))


def context_prompt(documents: list[dict], instruction: str) -> str:
    """airoboros' context-obedient prompt: each document's metadata and text, then the instruction.

    `documents`: [{"text": str, "metadata": {"date": ..., "url": ..., ...}}, ...] (metadata optional).
    """
    blocks = []
    for i, document in enumerate(documents):
        if not isinstance(document, dict) or not isinstance(document.get("text"), str):
            raise ValueError(f"documents[{i}].text: every document needs a text string")
        metadata = document.get("metadata") or {}
        lines = "".join(f"{key}: {value}\n" for key, value in metadata.items())
        blocks.append("BEGININPUT\nBEGINCONTEXT\n" + lines + "ENDCONTEXT\n" + document["text"].strip() + "\nENDINPUT\n")
    return "".join(blocks) + "BEGININSTRUCTION\n" + instruction.strip() + "\nENDINSTRUCTION"


def _next_call(text: str, position: int) -> int:
    """Index of the next call object: a `{` at the start of a line that opens a call (-1: none)."""
    for line in _LINE_OPENING_BRACE.finditer(text, position):
        if _opens_call(text, line.end() - 1):
            return line.end() - 1
    return -1


def _opens_call(text: str, index: int) -> bool:
    """Whether the `{` at `index` opens a JSON object with a "function" key, or a broken object that starts
    like a call (a malformed call); prose may start with `{` too."""
    try:
        obj, _ = decode_json_at(text, index)
    except CallSyntaxError:
        return bool(_CALL_OPENING.match(text, index))
    return isinstance(obj, dict) and "function" in obj


def _read_call(text: str, found: int, number: int) -> tuple[dict, int]:
    try:
        obj, end = decode_json_at(text, found)
        return call_from_json(obj, "function", "params"), end
    except CallSyntaxError as err:
        raise CallSyntaxError(f"call {number}: {err.reason}", text[found:found + 200]) from None


class Format(ChatFormat):
    name = "vicuna"
    OPTIONS = ()
    special_tokens: list[str] = [EOS]
    eos_token = EOS
    stop_strings: list[str] = []
    chat_template = TEMPLATE.strip()
    response_template = RESPONSE_TEMPLATE
    context_prompt = staticmethod(context_prompt)

    def render_assistant(self, message: dict) -> str:
        message = with_legacy_call(message)
        content = message.get("content") or ""
        parts = [content] if content else []
        for call in message.get("tool_calls") or []:
            arguments = call["function"].get("arguments")
            arguments = {} if arguments is None else arguments
            parts.append('{"function": ' + dumps(call["function"]["name"]) + ', "params": ' + arguments_text(arguments) + "}")
        return " " + "\n".join(parts) + EOS

    def render(self, messages, tools=None, add_generation_prompt=False) -> str:
        messages = with_legacy_calls(messages)
        system, rest = DEFAULT_SYSTEM, messages
        if messages and messages[0]["role"] == "system":
            system, rest = messages[0].get("content") or "", messages[1:]
        text = system
        if tools:
            text += FUNCTIONS_INTRO + "\n".join(dumps(function_of(t)) for t in tools)
        text += " "
        for message in rest:
            role, content = message["role"], message.get("content") or ""
            if role == "assistant":
                text += "ASSISTANT:" + self.render_assistant(message)
            elif role in TOOL_ROLES:
                text += "FUNCTION RESULT: " + content + " "
            else:
                text += role.upper() + ": " + content + " "
        return text + ("ASSISTANT:" if add_generation_prompt else "")

    def parse_strict(self, text: str) -> dict:
        prose, calls = scan_calls(text, _next_call, _read_call, stop=EOS)
        return assistant_message(prose, calls)
