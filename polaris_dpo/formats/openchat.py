"""OpenChat-3.5 / Starling: `GPT4 Correct User: ...<|end_of_turn|>GPT4 Correct Assistant:`.

A leading system part (before the first turn, closed by `<|end_of_turn|>`) holds the system prompt and
the available functions, one JSON definition per line. The assistant calls a function with a line
`<functioncall> {"name": ..., "arguments": {...}}` (glaive's call syntax), after any prose; function
results come back as `GPT4 Correct Tool: ...<|end_of_turn|>`.
"""

from __future__ import annotations

from polaris_dpo.formats.base import (
    JINJA_HELPERS,
    ChatFormat,
    arguments_text,
    assistant_message,
    dumps,
    function_of,
    jinja_split_system,
    scan_delimited_calls,
    with_legacy_call,
    with_legacy_calls,
)
from polaris_dpo.formats.response import json_calls, prose, response_template

EOT, CALL = "<|end_of_turn|>", "<functioncall>"
TOOL_ROLES = ("tool", "function", "fn")
FUNCTIONS_INTRO = ("You can call the following functions. To call one, answer with a line "
                   "<functioncall> {\"name\": <function name>, \"arguments\": <arguments object>}.\n")

TEMPLATE = JINJA_HELPERS + r"""
{%- macro render_call(fn) -%}
{{- '<functioncall> {"name": ' + fn['name']|tojson + ', "arguments": ' + arguments_json(fn) + '}' -}}
{%- endmacro -%}""" + jinja_split_system("") + r"""
{%- if system or tools -%}
{{- system + ('\n\n' if system and tools else '') -}}
{%- if tools -%}
{{- FUNCTIONS_INTRO -}}
{%- for tool in tools -%}{{- function_json(tool) + ('\n' if not loop.last else '') -}}{%- endfor -%}
{%- endif -%}
{{- '<|end_of_turn|>' -}}
{%- endif -%}
{%- for message in loop_messages -%}
{%- if message['role'] == 'assistant' -%}
{{- 'GPT4 Correct Assistant:' -}}
{%- generation -%}
{%- set parts = namespace(first=true) -%}
{{- ' ' -}}
{%- if message['content'] -%}{{- message['content'] -}}{%- set parts.first = false -%}{%- endif -%}
{%- for call in message['tool_calls'] or [] -%}
{{- ('' if parts.first else '\n') + render_call(call['function']) -}}
{%- set parts.first = false -%}
{%- endfor -%}
{{- '<|end_of_turn|>' -}}
{%- endgeneration -%}
{%- elif message['role'] in ['tool', 'function', 'fn'] -%}
{{- 'GPT4 Correct Tool: ' + (message['content'] or '') + '<|end_of_turn|>' -}}
{%- elif message['role'] == 'user' -%}
{{- 'GPT4 Correct User: ' + (message['content'] or '') + '<|end_of_turn|>' -}}
{%- else -%}
{{- 'GPT4 Correct ' + message['role']|capitalize + ': ' + (message['content'] or '') + '<|end_of_turn|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- 'GPT4 Correct Assistant:' -}}
{%- endif -%}
""".replace("FUNCTIONS_INTRO", "'" + FUNCTIONS_INTRO.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'")


# A call has no closing token: it ends where the next call or the end of the turn begins.
RESPONSE_TEMPLATE = response_template("GPT4 Correct Assistant:", prose(close=EOT),
                                      json_calls(open_pattern=r"\s*<functioncall>", close_pattern=r"\s*(?=<functioncall>)|<\|end_of_turn\|>"))


class Format(ChatFormat):
    name = "openchat"
    OPTIONS = ()
    special_tokens = [EOT, CALL]
    eos_token = EOT
    stop_strings: list[str] = []
    chat_template = TEMPLATE.strip()
    response_template = RESPONSE_TEMPLATE

    def render_assistant(self, message: dict) -> str:
        message = with_legacy_call(message)
        content = message.get("content") or ""
        parts = [content] if content else []
        for call in message.get("tool_calls") or []:
            arguments = call["function"].get("arguments")
            arguments = {} if arguments is None else arguments
            parts.append(CALL + ' {"name": ' + dumps(call["function"]["name"]) + ', "arguments": '
                         + arguments_text(arguments) + "}")
        return " " + "\n".join(parts) + EOT

    def render(self, messages, tools=None, add_generation_prompt=False) -> str:
        messages = with_legacy_calls(messages)
        system, rest = "", messages
        if messages and messages[0]["role"] == "system":
            system, rest = messages[0].get("content") or "", messages[1:]
        text = ""
        if system or tools:
            text = system + ("\n\n" if system and tools else "")
            if tools:
                text += FUNCTIONS_INTRO + "\n".join(dumps(function_of(t)) for t in tools)
            text += EOT
        for message in rest:
            role, content = message["role"], message.get("content") or ""
            if role == "assistant":
                text += "GPT4 Correct Assistant:" + self.render_assistant(message)
            elif role in TOOL_ROLES:
                text += "GPT4 Correct Tool: " + content + EOT
            else:
                text += "GPT4 Correct " + role.capitalize() + ": " + content + EOT
        return text + ("GPT4 Correct Assistant:" if add_generation_prompt else "")

    def parse_strict(self, text: str) -> dict:
        prose, calls = scan_delimited_calls(text, CALL, None, stop=EOT)
        return assistant_message(prose, calls)
