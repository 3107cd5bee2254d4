"""Polaris function-calling rows (StarfleetAI/function-calling and the Polaris chat format).

Three shapes are read:
- `conversations`: [{"from": "system" | "human" | "gpt" | "function_response", "value": str}] as in
  StarfleetAI/function-calling;
- `messages`: [{"role": "system" | "user" | "assistant" | "fn" | "tool", "content": str}];
- `text`: a rendered Polaris chat (`<|im_start|>role\\n...<|im_end|>`, newlines between messages optional).

The system message carries the functions: `## Configuration` (`Functions: enabled` / `disabled` and
other options, which are dropped), `## Available Functions` with one JSON definition per line, `---`,
then the system prompt, which stays the system message. An assistant turn calls a function with
`<|fn_start|>{"name": ..., "arguments": ...}<|fn_end|>` (arguments an object or a JSON string).
"""

from __future__ import annotations

import re

from polaris_dpo.formats.base import CallSyntaxError, scan_delimited_calls
from polaris_dpo.messages import load_json
from polaris_dpo.readers.base import Reader as BaseReader
from polaris_dpo.readers.base import RowError

FN_START, FN_END = "<|fn_start|>", "<|fn_end|>"
SPEAKERS = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
            "function_response": "fn", "fn": "fn", "tool": "fn", "function": "fn"}
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.DOTALL)
_END_OF_CONFIGURATION = re.compile(r"\r?\n---\r?\n")


class Reader(BaseReader):
    def convert(self, row: dict) -> dict:
        if isinstance(row.get("conversations"), list):
            turns, key = [(t.get("from"), t.get("value")) if isinstance(t, dict) else (None, None)
                          for t in row["conversations"]], "conversations"
        elif isinstance(row.get("messages"), list):
            turns, key = [(t.get("role"), t.get("content")) if isinstance(t, dict) else (None, None)
                          for t in row["messages"]], "messages"
        elif isinstance(row.get("conversations") or row.get("text"), str):
            key = "conversations" if isinstance(row.get("conversations"), str) else "text"
            turns = chatml_turns(row[key], key)
        else:
            raise RowError("conversations", "missing required field (or `messages` / `text`)")
        messages, tools = [], []
        for i, (speaker, value) in enumerate(turns):
            field = f"{key}[{i}]"
            speaker_field, value_field = ("role", "content") if key == "messages" else ("from", "value")
            if not isinstance(speaker, str) or speaker not in SPEAKERS:
                raise RowError(f"{field}.{speaker_field}", f"unknown speaker {speaker!r}")
            if not isinstance(value, str):
                raise RowError(f"{field}.{value_field}", f"must be text, got {type(value).__name__}")
            role = SPEAKERS[speaker]
            if role == "system":
                found, prompt = parse_system(value, f"{field}.{value_field}")
                tools += found
                if prompt:
                    messages.append({"role": "system", "content": prompt})
            elif role == "assistant":
                messages.append(parse_assistant(value, f"{field}.{value_field}"))
            else:
                messages.append({"role": role, "content": value})
        conversation = {"messages": messages, "tools": tools}
        if row.get("id") is not None:
            conversation["id"] = row["id"]
        return conversation


def chatml_turns(text: str, field: str) -> list[tuple[str, str]]:
    turns = [(m.group(1), m.group(2)) for m in _CHATML.finditer(text)]
    leftover = _CHATML.sub("", text).strip()
    if not turns or leftover:
        raise RowError(field, f"not a Polaris chat: text outside <|im_start|>...<|im_end|>: {leftover[:60]!r}")
    return turns


def parse_system(text: str, field: str) -> tuple[list, str]:
    """(function definitions, system prompt) of a Polaris system message; plain prompts pass through."""
    if not text.startswith("## Configuration"):
        return [], text
    parts = _END_OF_CONFIGURATION.split(text, maxsplit=1)
    if len(parts) < 2:
        raise RowError(field, "a `## Configuration` block must end with a `---` line")
    header, prompt = parts
    enabled = re.search(r"^Functions:\s*(enabled|disabled)\s*$", header, re.MULTILINE)
    if enabled is None:
        raise RowError(field, "the `## Configuration` block has no `Functions: enabled|disabled` line")
    tools = []
    if "## Available Functions" in header:
        listing = header.split("## Available Functions", 1)[1]
        for n, line in enumerate(line for line in listing.splitlines() if line.strip()):
            tools.append(load_json(line, f"{field} (function {n})"))
    if enabled.group(1) == "disabled" and tools:
        raise RowError(field, "`Functions: disabled` but functions are listed")
    return tools, prompt.lstrip("\r\n")


def parse_assistant(text: str, field: str) -> dict:
    """An assistant turn: text, and calls between <|fn_start|> and <|fn_end|> (each call's JSON is read
    first, so call tokens inside an argument string are text, as the Polaris format's parser reads them)."""
    try:
        rest, calls = scan_delimited_calls(text, FN_START, FN_END, decode=_call_object)
    except CallSyntaxError as err:
        raise RowError(field, err.reason) from None
    if not calls:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": rest.strip() or None, "tool_calls": calls}


def _call_object(value):
    if not isinstance(value, dict):
        raise CallSyntaxError(f"a call must be a JSON object, got {type(value).__name__}")
    return value  # checked and made canonical by messages.normalize_call, which names the field
