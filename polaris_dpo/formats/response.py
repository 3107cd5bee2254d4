"""Response templates: the declarative inverse of a chat template, saved into tokenizer_config.json.

transformers reads it as `tokenizer.response_template` (`tokenizer.parse_response(text, prefix=prompt)`,
`transformers serve` answering with `tool_calls`), and vLLM's ResponseTemplateParser reads the same
metadata. A template names a `start_anchor` (where the assistant's text begins in the prompt) and
fields: regions of the output between an open and a close delimiter, each parsed by a content parser
("text", "json", ...) and reshaped by a transform. The fields here are always `content` (the prose) and
`tool_calls` ({"type": "function", "function": {"name", "arguments"}}).

Each format module builds its template from these pieces; docs/serving.md lists what a template
cannot say exactly and how far each one agrees with its format's own parse.
"""

from __future__ import annotations

CALL_OBJECT = {"type": "function", "function": "{content}"}  # the region is the JSON {"name", "arguments"}
CALL_NAMED = {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}}  # name captured by open


def response_template(start_anchor: str | list[str], content: dict, tool_calls: dict) -> dict:
    """A version-1 response template of an assistant message with `content` and `tool_calls` fields."""
    return {"version": 1, "defaults": {"role": "assistant"}, "start_anchor": start_anchor,
            "fields": {"content": content, "tool_calls": tool_calls}}


def prose(**delimiters) -> dict:
    """The `content` field, stripped. `delimiters`: open / open_pattern / close / close_pattern; without an
    open it is the region every text outside a call falls into.

    Plain text, neither repeated nor joined: vLLM's serving adapter streams no other kind of content. A
    second stretch of text (after a call) therefore replaces the first, so the delimiters around calls
    take the whitespace between them (an empty stretch of text opens no region).
    """
    return {**delimiters, "content": "text"}


def json_calls(transform: dict = CALL_OBJECT, **delimiters) -> dict:
    """The `tool_calls` field: one call per region, its body JSON (an object, or with a named transform
    the arguments), reshaped by `transform`."""
    return {**delimiters, "content": "json", "repeats": True, "transform": transform}
