"""The contract every format module fulfils.

Canonical messages (see polaris_dpo.messages): dicts with `role` in system | user | assistant | tool,
`content` (str or None), for assistant turns optional `tool_calls` =
[{"type": "function", "function": {"name": str, "arguments": dict}}, ...] (arguments always a dict in
memory), for tool turns `name` and optional `tool_call_id`. `tools` is a list of OpenAI-style
{"type": "function", "function": {"name", "description", "parameters"}} definitions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParseError:
    """Why generated text is not a well-formed assistant message (the judge's malformed_call)."""

    reason: str  # e.g. "invalid JSON in call 1: Expecting ',' delimiter", "unbalanced <|fn_start|>"
    fragment: str = ""  # the offending piece of text


class ChatFormat:
    """Base class of a format. Subclasses set the class attributes and implement render / parse."""

    name: str = ""
    OPTIONS: tuple[str, ...] = ()  # FormatConfig fields this format takes as keyword arguments
    special_tokens: list[str] = []  # tokens added to the tokenizer (new embedding rows, trained with LoRA)
    eos_token: str = ""  # the token that ends an assistant turn (generation stops on it; loss covers it)
    stop_strings: list[str] = []  # further strings that end generation
    chat_template: str | None = None  # Jinja template with {% generation %} markers around assistant output

    def render(self, messages: list[dict], tools: list[dict] | None = None,
               add_generation_prompt: bool = False) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> dict:
        """Generated text -> {"role": "assistant", "content": str | None, "tool_calls": [...]}.

        Never raises on model output: text that starts a call but does not parse comes back with
        "parse_error": ParseError(...) and the raw text as content.
        """
        raise NotImplementedError

    def render_assistant(self, message: dict) -> str:
        """The text the model should generate for one assistant message (up to and including eos)."""
        raise NotImplementedError
