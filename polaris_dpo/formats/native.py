"""The model's own chat template with `tools=` (Llama 3.1, Qwen 2.5, Mistral, Hermes users).

`template`: a Jinja chat template string, a file holding one, or a tokenizer folder whose template to
use (its `chat_template.jinja` or `tokenizer_config.json`); rendering then goes through transformers'
own `render_jinja_template`, exactly as `apply_chat_template` does; the end-of-turn token is the
folder's `eos_token`, else what the template writes after an assistant reply. Without a template (the
tiny model has none of its own) a bundled Hermes-style ChatML template is used, which writes calls in
the configured syntax. `call_syntax` says how the model writes calls, and so which parser reads them:

    hermes   <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>   (one block per call)
    mistral  [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
"""

from __future__ import annotations

import json
from pathlib import Path

from polaris_dpo.formats.base import (
    JINJA_HELPERS,
    CallSyntaxError,
    ChatFormat,
    arguments_text,
    assistant_message,
    call_from_json,
    decode_json_at,
    dumps,
    jinja_literal,
    jinja_split_system,
    scan_delimited_calls,
    with_legacy_call,
    with_legacy_calls,
)
from polaris_dpo.formats.response import json_calls, prose, response_template

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_RESPONSE, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"
MISTRAL_CALLS = "[TOOL_CALLS]"
PROBE_REPLY = "Probe reply 7f3a."  # rendered to find a template's end-of-turn token
TOOL_ROLES = ("tool", "function", "fn")
SYNTAX_TOKENS = {"hermes": [TOOL_CALL, TOOL_CALL_END, TOOL_RESPONSE, TOOL_RESPONSE_END], "mistral": [MISTRAL_CALLS]}
TOOLS_INTRO = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n")
CALL_HOWTO = {
    "hermes": ("</tools>\n\nFor each function call, return a json object with function name and arguments within "
               "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
               "<args-json-object>}\n</tool_call>"),
    "mistral": ("</tools>\n\nTo call functions, write [TOOL_CALLS] followed by a JSON list of "
                "{\"name\": <function-name>, \"arguments\": <args-json-object>} objects."),
}

TEMPLATE = JINJA_HELPERS + r"""
{%- macro call_json(fn) -%}
{{- '{"name": ' + fn['name']|tojson + ', "arguments": ' + arguments_json(fn) + '}' -}}
{%- endmacro -%}""" + jinja_split_system("") + r"""
{%- if system or tools -%}
{{- '<|im_start|>system\n' + system -}}
{%- if tools -%}
{{- ('\n\n' if system else '') + TOOLS_INTRO -}}
{%- for tool in tools -%}{{- tool|tojson + '\n' -}}{%- endfor -%}
{{- CALL_HOWTO -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in loop_messages -%}
{%- if message['role'] == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- generation -%}
{{- message['content'] or '' -}}
{%- if message['tool_calls'] -%}
{%- if MISTRAL -%}
{{- '[TOOL_CALLS][' -}}
{%- for call in message['tool_calls'] -%}{{- (', ' if not loop.first else '') + call_json(call['function']) -}}{%- endfor -%}
{{- ']' -}}
{%- else -%}
{%- for call in message['tool_calls'] -%}
{{- ('\n' if message['content'] or not loop.first else '') + '<tool_call>\n' + call_json(call['function']) + '\n</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{%- endif -%}
{{- '<|im_end|>' -}}
{%- endgeneration -%}
{{- '\n' -}}
{%- elif message['role'] in ['tool', 'function', 'fn'] -%}
{{- '<|im_start|>tool\n<tool_response>\n' + (message['content'] or '') + '\n</tool_response><|im_end|>\n' -}}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""


def calls_field(call_syntax: str, eos: str) -> dict:
    """The response template's tool_calls field for `call_syntax`: one <tool_call> block per call, or one
    [TOOL_CALLS] list running to the end of the turn."""
    if call_syntax == "hermes":
        return json_calls(open_pattern=r"\s*<tool_call>", close=TOOL_CALL_END)
    calls = {"open": MISTRAL_CALLS, "content": "json", "transform": {"type": "function", "function": {
        "name": "{name}", "arguments": "{arguments}"}}, "transform_each": True}
    return {**calls, "close": eos} if eos else calls


def load_template(template: str) -> tuple[str, str]:
    """(Jinja text, eos token or "") from a template string, a template file, or a tokenizer folder."""
    if "{%" in template or "{{" in template:
        return template, ""
    path = Path(template).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8"), ""
    if path.is_dir():
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        eos = config.get("eos_token") or ""
        eos = eos.get("content", "") if isinstance(eos, dict) else eos
        if (path / "chat_template.jinja").is_file():
            return (path / "chat_template.jinja").read_text(encoding="utf-8"), eos
        if isinstance(config.get("chat_template"), str):
            return config["chat_template"], eos
        raise ValueError(f"native: {path} has no chat template (no chat_template.jinja, none in tokenizer_config.json)")
    raise ValueError(f"native: template={template[:80]!r} is neither a Jinja template, a file nor a tokenizer folder")


class Format(ChatFormat):
    name = "native"
    OPTIONS = ("call_syntax", "template")

    def __init__(self, call_syntax: str = "hermes", template: str | None = None):
        if call_syntax not in SYNTAX_TOKENS:
            raise ValueError(f"native: call_syntax={call_syntax!r}: expected hermes or mistral")
        self.call_syntax = call_syntax
        self.custom = template is not None
        if self.custom:
            self.chat_template, self.eos_token = load_template(template)
            self.eos_token = self.eos_token or self._end_of_turn()
            self.special_tokens = list(SYNTAX_TOKENS[call_syntax])
        else:
            self.chat_template = (TEMPLATE.strip().replace("TOOLS_INTRO", jinja_literal(TOOLS_INTRO))
                                  .replace("CALL_HOWTO", jinja_literal(CALL_HOWTO[call_syntax]))
                                  .replace("MISTRAL", "true" if call_syntax == "mistral" else "false"))
            self.eos_token = IM_END
            self.special_tokens = [IM_START, IM_END, *SYNTAX_TOKENS[call_syntax]]
        self.stop_strings = []
        anchor = self._generation_prompt() if self.custom else IM_START + "assistant\n"
        content = prose(close=self.eos_token) if self.eos_token else prose()
        self.response_template = (response_template(anchor, content, calls_field(call_syntax, self.eos_token))
                                  if anchor else None)

    # ------------------------------------------------------------ rendering

    def _generation_prompt(self) -> str:
        """What the template adds for add_generation_prompt after a user message, less leading whitespace
        ("" when it adds nothing or cannot render one): where the assistant's text begins."""
        from jinja2 import TemplateError

        prompt = [{"role": "user", "content": "x"}]
        try:
            before, after = self._render_jinja(prompt, None, False), self._render_jinja(prompt, None, True)
        except TemplateError:
            return ""
        return after[len(before):].lstrip() if after.startswith(before) else ""

    def _render_jinja(self, messages, tools, add_generation_prompt) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([messages], tools=tools or None, chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt)
        return rendered[0]

    def _end_of_turn(self) -> str:
        """What the template writes after an assistant reply, less whitespace: the token that ends a turn
        ("" when it writes nothing there, or cannot render a user message and a reply)."""
        from jinja2 import TemplateError

        probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": PROBE_REPLY}]
        try:
            rendered = self._render_jinja(probe, None, False)
        except TemplateError:
            return ""
        if PROBE_REPLY not in rendered:
            return ""
        return rendered[rendered.rindex(PROBE_REPLY) + len(PROBE_REPLY):].strip()

    def _calls_text(self, message: dict) -> str:
        calls = []
        for call in message.get("tool_calls") or []:
            arguments = call["function"].get("arguments")
            arguments = {} if arguments is None else arguments
            calls.append('{"name": ' + dumps(call["function"]["name"]) + ', "arguments": ' + arguments_text(arguments) + "}")
        if not calls:
            return ""
        if self.call_syntax == "mistral":
            return MISTRAL_CALLS + "[" + ", ".join(calls) + "]"
        lead = "\n" if message.get("content") else ""
        return lead + "\n".join(TOOL_CALL + "\n" + call + "\n" + TOOL_CALL_END for call in calls)

    def render_assistant(self, message: dict) -> str:
        message = with_legacy_call(message)
        if self.custom:  # what the template adds after its generation prompt
            prompt = [{"role": "user", "content": "x"}]
            before = self._render_jinja(prompt, None, True)
            after = self._render_jinja([*prompt, message], None, False)
            if not after.startswith(before):
                raise ValueError("native: this template does not render an assistant turn after its generation prompt")
            text = after[len(before):]
            if self.eos_token and self.eos_token in text:  # drop the separator the template puts after a turn
                text = text[:text.rindex(self.eos_token) + len(self.eos_token)]
            return text
        return (message.get("content") or "") + self._calls_text(message) + IM_END

    def render(self, messages, tools=None, add_generation_prompt=False) -> str:
        messages = with_legacy_calls(messages)
        if self.custom:
            return self._render_jinja(messages, tools, add_generation_prompt)
        system, rest = "", messages
        if messages and messages[0]["role"] == "system":
            system, rest = messages[0].get("content") or "", messages[1:]
        text = ""
        if system or tools:
            text = IM_START + "system\n" + system
            if tools:
                text += ("\n\n" if system else "") + TOOLS_INTRO + "".join(dumps(t) + "\n" for t in tools)
                text += CALL_HOWTO[self.call_syntax]
            text += IM_END + "\n"
        for message in rest:
            role = message["role"]
            content = message.get("content") or ""
            if role == "assistant":
                text += IM_START + "assistant\n" + self.render_assistant(message) + "\n"
            elif role in TOOL_ROLES:
                text += IM_START + "tool\n" + TOOL_RESPONSE + "\n" + content + "\n" + TOOL_RESPONSE_END + IM_END + "\n"
            else:
                text += IM_START + role + "\n" + content + IM_END + "\n"
        return text + (IM_START + "assistant\n" if add_generation_prompt else "")

    # ------------------------------------------------------------ parsing

    def parse_strict(self, text: str) -> dict:
        stop = self.eos_token or None
        if self.call_syntax == "mistral":
            return self._parse_mistral(text, stop)
        prose, calls = scan_delimited_calls(text, TOOL_CALL, TOOL_CALL_END, stop=stop)
        return assistant_message(prose, calls)

    def _parse_mistral(self, text: str, stop: str | None) -> dict:
        found = text.find(MISTRAL_CALLS)
        stopped = text.find(stop) if stop else -1
        if found < 0 or (0 <= stopped < found):
            return assistant_message(text[:stopped] if stopped >= 0 else text, [])
        value, end = decode_json_at(text, found + len(MISTRAL_CALLS))
        items = value if isinstance(value, list) else [value]
        calls = []
        for i, item in enumerate(items):
            try:
                calls.append(call_from_json(item))
            except CallSyntaxError as err:
                raise CallSyntaxError(f"call {i + 1}: {err.reason}", dumps(item)[:200]) from None
        rest = text[end:]
        if stop and stop in rest:
            rest = rest[:rest.index(stop)]
        if MISTRAL_CALLS in rest:
            raise CallSyntaxError(f"a second {MISTRAL_CALLS} block", rest[:200])
        return assistant_message(text[:found] + rest, calls)
