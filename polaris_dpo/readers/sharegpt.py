"""ShareGPT rows as glaive-function-calling-v2 and LLaMA-Factory write them.

    {"conversations": [{"from": "human" | "gpt" | "function_call" | "observation" | "system", "value": str}],
     "tools": "<JSON list of function definitions>", "system": optional str}

`function_call` values are {"name", "arguments"} objects (or a list of them: parallel calls); a call
right after a `gpt` turn joins that turn. `role` / `content` keys and a `messages` list work too.
"""

from __future__ import annotations

from polaris_dpo.messages import load_json, normalize_call
from polaris_dpo.readers.base import Reader as BaseReader
from polaris_dpo.readers.base import RowError, require

ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "system": "system",
    "function_call": "call", "tool_call": "call",
    "observation": "tool", "function_response": "tool", "tool": "tool", "function": "tool", "tool_response": "tool",
}


class Reader(BaseReader):
    def convert(self, row: dict) -> dict:
        key = "conversations" if "conversations" in row else "messages"
        turns = require(row, key, list)
        messages: list[dict] = []
        if row.get("system"):
            messages.append({"role": "system", "content": row["system"]})
        for i, turn in enumerate(turns):
            field = f"{key}[{i}]"
            if not isinstance(turn, dict):
                raise RowError(field, f"a turn must be an object, got {type(turn).__name__}")
            speaker_key = "from" if "from" in turn else "role"
            speaker = turn.get(speaker_key)
            value = turn.get("value", turn.get("content"))
            if not isinstance(speaker, str) or speaker not in ROLES:
                raise RowError(f"{field}.{speaker_key}",
                               f"unknown speaker {speaker!r} (expected one of {', '.join(ROLES)})")
            role = ROLES[speaker]
            if role == "call":
                calls = _calls(value, f"{field}.value")
                previous = messages[-1] if messages else None
                if previous and previous["role"] == "assistant":
                    previous.setdefault("tool_calls", []).extend(calls)  # text (or calls) then calls: one turn
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            else:
                if not isinstance(value, str) and not (role == "tool" and isinstance(value, (dict, list))):
                    raise RowError(f"{field}.value", f"must be text, got {type(value).__name__}")
                messages.append({"role": role, "content": value})  # a tool result given as JSON is serialised
        conversation = {"messages": messages, "tools": row.get("tools")}
        if row.get("id") is not None:
            conversation["id"] = row["id"]
        return conversation


def _calls(value, field: str) -> list:
    """The calls of a function_call turn, checked here so that a bad one is named by the row's own field."""
    if isinstance(value, str):
        value = load_json(value, field)
    if isinstance(value, list):
        if not value:
            raise RowError(field, "a function_call turn with no call")
        return [normalize_call(call, f"{field}[{i}]") for i, call in enumerate(value)]
    return [normalize_call(value, field)]
