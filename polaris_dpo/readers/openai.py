"""OpenAI-style chat rows: {"messages": [...], "tools": [...]} (legacy `functions` / `function_call` accepted).

Rows in this toolkit's storage form (arguments and tools as JSON strings, with `id`, `source`, `row`,
`acceptable`, `preferences`) read back unchanged, so any saved conversation file is an `openai` source.
"""

from __future__ import annotations

from polaris_dpo.messages import load_json
from polaris_dpo.readers.base import Reader as BaseReader
from polaris_dpo.readers.base import require


class Reader(BaseReader):
    def convert(self, row: dict) -> dict:
        conversation = {
            "messages": require(row, "messages", (list, str)),
            "tools": row.get("tools"),
            "functions": row.get("functions"),
        }
        for key in ("id", "source", "row"):  # provenance, when the row carries it
            if row.get(key) is not None:
                conversation[key] = row[key]
        for key in ("acceptable", "preferences"):  # rows this toolkit wrote itself (storage form)
            if row.get(key) is not None:
                value = row[key]
                conversation[key] = load_json(value, key) if isinstance(value, str) else value
        return conversation
