"""Prompt formats: each module renders canonical conversations to text and parses generated text back.

    fmt = polaris_dpo.formats.get("polaris", fn_role="tool")
    fmt.render(messages, tools=tools, add_generation_prompt=True) -> str
    fmt.parse(text) -> {"role": "assistant", "content": ..., "tool_calls": [...]}
    fmt.chat_template -> the Jinja string saved into the tokenizer
    fmt.response_template -> its inverse, saved beside it (tokenizer.parse_response, transformers serve)

Each module defines one subclass of `ChatFormat` (see base.py for the contract) named `Format`.
"""

from __future__ import annotations

import importlib

from polaris_dpo.formats.base import ChatFormat, ParseError

FORMATS = ("polaris", "functionary", "chatml_tools", "openchat", "vicuna", "native")


def get(name: str, **options) -> ChatFormat:
    if name not in FORMATS:
        raise ValueError(f"format {name!r} is not known: choose one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"polaris_dpo.formats.{name}")
    return module.Format(**options)


def from_config(format_cfg) -> ChatFormat:
    """The format a `format:` config section describes (only the options that format takes are passed)."""
    module = importlib.import_module(f"polaris_dpo.formats.{format_cfg.name}")
    accepted = getattr(module.Format, "OPTIONS", ())
    options = {key: format_cfg[key] for key in accepted if key in format_cfg}
    if "config_options" in options:
        options["config_options"] = dict(options["config_options"])
    return get(format_cfg.name, **options)


__all__ = ["ChatFormat", "FORMATS", "ParseError", "from_config", "get"]
