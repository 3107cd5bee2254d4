"""MPT ChatML with tools (the llm-foundry proposal for MPT-30B function calling).

    <|im_start|>system
    // Supported function definitions that should be called when necessary.
    namespace functions { ... } // namespace functions<|im_end|>
    <|im_start|>system
    You are a helpful assistant<|im_end|>
    <|im_start|>user
    What is the weather in Hanoi?<|im_end|>
    <|im_start|>function
    functions.get_weather({"location": "Hanoi"})<|im_end|>
    <|im_start|>tool
    {"temperature": 10}<|im_end|>
    <|im_start|>assistant
    It is 10 degrees.<|im_end|>

The generation prompt is a bare `<|im_start|>`: the model chooses the role, `assistant` to answer in
text or `function` to call one of the namespace's functions (the TypeScript call of the declared
`(_: {...}) => any` type, with its single object argument as JSON). A canonical assistant turn with
text and calls is written as consecutive messages; generation stops at the first `<|im_end|>`, so a
sampled turn is either text or one call, as the proposal intends.
"""

from __future__ import annotations

from polaris_dpo.formats.base import (
    CallSyntaxError,
    ChatFormat,
    arguments_text,
    assistant_message,
    decode_json_at,
    make_call,
    skip_space,
    with_legacy_call,
    with_legacy_calls,
)
from polaris_dpo.formats.response import CALL_NAMED, json_calls, prose, response_template
from polaris_dpo.formats.typescript import JINJA_MACROS, has_functions, namespace

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
NEXT = IM_END + "\n" + IM_START  # between the messages of one assistant turn
TOOL_ROLES = ("tool", "function", "fn")

TEMPLATE = JINJA_MACROS + r"""
{%- macro call_arguments(fn) -%}
{%- set arguments = fn['arguments'] if fn['arguments'] is defined and fn['arguments'] is not none else {} -%}
{{- arguments if arguments is string else arguments|tojson -}}
{%- endmacro -%}
{%- if has_functions(tools) -%}
{{- '<|im_start|>system\n' + ts_namespace(tools) + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message['role'] == 'assistant' -%}
{{- '<|im_start|>' -}}
{%- generation -%}
{%- set parts = namespace(first=true) -%}
{%- if message['content'] -%}
{{- 'assistant\n' + message['content'] -}}
{%- set parts.first = false -%}
{%- endif -%}
{%- for call in message['tool_calls'] or [] -%}
{{- ('' if parts.first else '<|im_end|>\n<|im_start|>') + 'function\nfunctions.' + call['function']['name'] + '(' + call_arguments(call['function']) + ')' -}}
{%- set parts.first = false -%}
{%- endfor -%}
{{- ('assistant\n' if parts.first else '') + '<|im_end|>' -}}
{%- endgeneration -%}
{{- '\n' -}}
{%- elif message['role'] in ['tool', 'function', 'fn'] -%}
{{- '<|im_start|>tool\n' + (message['content'] or '') + '<|im_end|>\n' -}}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>' -}}
{%- endif -%}
"""


# The model writes the role after the prompt's bare <|im_start|>; text outside an assistant or function
# message (the separator between two of them) belongs to no field.
RESPONSE_TEMPLATE = response_template(
    IM_START, prose(open="assistant\n", close=IM_END),
    json_calls(CALL_NAMED, open_pattern=r"function\n(?:functions\.)?(?P<name>[^(\n]+?)[ \t]*\(",
               close_pattern=r"\)\s*(?:<\|im_end\|>|\Z)"))


class Format(ChatFormat):
    name = "chatml_tools"
    OPTIONS = ()
    special_tokens = [IM_START, IM_END]
    eos_token = IM_END
    stop_strings: list[str] = []
    chat_template = TEMPLATE.strip()
    response_template = RESPONSE_TEMPLATE

    def render_assistant(self, message: dict) -> str:
        message = with_legacy_call(message)
        content = message.get("content") or ""
        parts = ["assistant\n" + content] if content else []
        for call in message.get("tool_calls") or []:
            arguments = call["function"].get("arguments")
            arguments = {} if arguments is None else arguments
            parts.append("function\nfunctions." + call["function"]["name"] + "(" + arguments_text(arguments) + ")")
        return (NEXT.join(parts) if parts else "assistant\n") + IM_END

    def render(self, messages, tools=None, add_generation_prompt=False) -> str:
        messages = with_legacy_calls(messages)
        text = IM_START + "system\n" + namespace(tools) + IM_END + "\n" if has_functions(tools) else ""
        for message in messages:
            role = message["role"]
            if role == "assistant":
                text += IM_START + self.render_assistant(message) + "\n"
            else:
                shown = "tool" if role in TOOL_ROLES else role
                text += IM_START + shown + "\n" + (message.get("content") or "") + IM_END + "\n"
        return text + (IM_START if add_generation_prompt else "")

    def parse_strict(self, text: str) -> dict:
        if text.startswith(IM_START):
            text = text[len(IM_START):]
        prose, calls, position = [], [], 0
        while True:
            newline = text.find("\n", position)
            role = text[position:newline] if newline >= 0 else text[position:]
            if role == "assistant":
                end = text.find(IM_END, newline + 1)
                end = len(text) if end < 0 else end
                prose.append(text[newline + 1:end])
            elif role == "function":
                start = newline + 1
                prefix = "functions."
                if text.startswith(prefix, start):
                    start += len(prefix)
                paren = text.find("(", start)
                name = text[start:paren].rstrip(" \t") if paren >= 0 else ""
                if not name or "\n" in name:
                    raise CallSyntaxError(f"call {len(calls) + 1}: expected functions.<name>(...)", text[newline:newline + 200])
                try:
                    arguments, end = decode_json_at(text, paren + 1)
                    calls.append(make_call(name, arguments))
                except CallSyntaxError as err:
                    raise CallSyntaxError(f"call {len(calls) + 1} ({name}): {err.reason}", err.fragment) from None
                end = skip_space(text, end)
                if not text.startswith(")", end):
                    raise CallSyntaxError(f"call {len(calls)} ({name}): missing `)`", text[paren:paren + 200])
                end = skip_space(text, end + 1)
            else:
                raise CallSyntaxError(f"unknown role {role[:40]!r}: expected assistant or function", text[position:position + 200])
            if text.startswith(NEXT, end):
                position = end + len(NEXT)
                continue
            rest = text[end:]
            if rest.startswith(IM_END) or not rest.strip():
                return assistant_message("".join(prose), calls)
            raise CallSyntaxError(f"text after call {len(calls)}", rest[:200])
