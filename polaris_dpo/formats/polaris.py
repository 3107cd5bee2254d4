"""Polaris (StarfleetAI): ChatML with no newline between messages and a `## Configuration` system block.

    <|im_start|>system
    ## Configuration

    Functions: enabled

    ## Available Functions

    {"name": "generate_password", "description": ..., "parameters": {...}}

    ---

    You are a helpful assistant.<|im_end|><|im_start|>user
    ...<|im_end|><|im_start|>assistant
    <|fn_start|>{"name": "generate_password", "arguments": "{\"length\": 42}"}<|fn_end|><|im_end|><|im_start|>tool
    {"result": "..."}<|im_end|>

Options: `fn_role` (role of function results: `fn` as in the seed's first commit, `tool` as in its
later one), `arguments_as_string` (write `arguments` as a JSON string, as the later commit does),
`config_options` (extra `key: value` lines in the configuration block, e.g. the current date).
Several calls in one turn are written one after another; prose before a call is kept as content.
"""

from __future__ import annotations

from polaris_dpo.formats.base import (
    JINJA_HELPERS,
    ChatFormat,
    arguments_text,
    assistant_message,
    dumps,
    function_of,
    jinja_literal,
    jinja_split_system,
    scan_delimited_calls,
    with_legacy_call,
    with_legacy_calls,
)
from polaris_dpo.formats.response import json_calls, prose, response_template

IM_START, IM_END, FN_START, FN_END = "<|im_start|>", "<|im_end|>", "<|fn_start|>", "<|fn_end|>"
TOOL_ROLES = ("tool", "function", "fn")

TEMPLATE = JINJA_HELPERS + r"""
{%- macro render_call(call) -%}
{%- set fn = call['function'] -%}
{{- '<|fn_start|>{"name": ' + fn['name']|tojson + ', "arguments": ' -}}
{%- if ARGUMENTS_AS_STRING -%}
{{- arguments_json(fn)|tojson -}}
{%- else -%}
{{- arguments_json(fn) -}}
{%- endif -%}
{{- '}<|fn_end|>' -}}
{%- endmacro -%}""" + jinja_split_system("") + r"""
{{- '<|im_start|>system\n## Configuration\n\nFunctions: ' + ('enabled' if tools else 'disabled') + CONFIG_LINES + '\n\n' -}}
{%- if tools -%}
{{- '## Available Functions\n\n' -}}
{%- for tool in tools -%}
{{- function_json(tool) + '\n' -}}
{%- endfor -%}
{{- '\n' -}}
{%- endif -%}
{{- '---\n\n' + system + '<|im_end|>' -}}
{%- for message in loop_messages -%}
{%- if message['role'] == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- generation -%}
{{- message['content'] or '' -}}
{%- for call in message['tool_calls'] or [] -%}{{- render_call(call) -}}{%- endfor -%}
{{- '<|im_end|>' -}}
{%- endgeneration -%}
{%- elif message['role'] in ['tool', 'function', 'fn'] -%}
{{- '<|im_start|>' + FN_ROLE + '\n' + (message['content'] or '') + '<|im_end|>' -}}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""


RESPONSE_TEMPLATE = response_template(IM_START + "assistant\n", prose(close=IM_END),
                                      json_calls(open=FN_START, close=FN_END))


class Format(ChatFormat):
    name = "polaris"
    OPTIONS = ("fn_role", "arguments_as_string", "config_options")
    special_tokens = [IM_START, IM_END, FN_START, FN_END]
    eos_token = IM_END
    stop_strings: list[str] = []
    response_template = RESPONSE_TEMPLATE  # with arguments_as_string, parse_response leaves arguments a JSON string

    def __init__(self, fn_role: str = "fn", arguments_as_string: bool = False,
                 config_options: dict[str, str] | None = None):
        if fn_role not in ("fn", "tool"):
            raise ValueError(f"polaris: fn_role={fn_role!r}: expected fn or tool")
        self.fn_role = fn_role
        self.arguments_as_string = bool(arguments_as_string)
        self.config_options = {str(k): str(v) for k, v in (config_options or {}).items()}
        config_lines = "".join(f"\n{key}: {value}" for key, value in self.config_options.items())
        self.chat_template = (TEMPLATE.strip()
                              .replace("ARGUMENTS_AS_STRING", "true" if self.arguments_as_string else "false")
                              .replace("CONFIG_LINES", jinja_literal(config_lines))
                              .replace("FN_ROLE", jinja_literal(fn_role)))
        self._config_lines = config_lines

    def render_call(self, call: dict) -> str:
        function = call["function"]
        arguments = function.get("arguments")
        arguments = {} if arguments is None else arguments
        if self.arguments_as_string:
            encoded = dumps(arguments_text(arguments))
        else:
            encoded = arguments_text(arguments)
        return FN_START + '{"name": ' + dumps(function["name"]) + ', "arguments": ' + encoded + "}" + FN_END

    def render_assistant(self, message: dict) -> str:
        message = with_legacy_call(message)
        calls = "".join(self.render_call(call) for call in message.get("tool_calls") or [])
        return (message.get("content") or "") + calls + IM_END

    def render(self, messages, tools=None, add_generation_prompt=False) -> str:
        messages = with_legacy_calls(messages)
        system, rest = "", messages
        if messages and messages[0]["role"] == "system":
            system, rest = messages[0].get("content") or "", messages[1:]
        text = (IM_START + "system\n## Configuration\n\nFunctions: " + ("enabled" if tools else "disabled")
                + self._config_lines + "\n\n")
        if tools:
            text += "## Available Functions\n\n" + "".join(dumps(function_of(t)) + "\n" for t in tools) + "\n"
        text += "---\n\n" + system + IM_END
        for message in rest:
            role = message["role"]
            if role == "assistant":
                text += IM_START + "assistant\n" + self.render_assistant(message)
            else:
                shown = self.fn_role if role in TOOL_ROLES else role
                text += IM_START + shown + "\n" + (message.get("content") or "") + IM_END
        if add_generation_prompt:
            text += IM_START + "assistant\n"
        return text

    def parse_strict(self, text: str) -> dict:
        prose, calls = scan_delimited_calls(text, FN_START, FN_END, stop=IM_END)
        return assistant_message(prose, calls)
