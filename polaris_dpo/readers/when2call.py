"""NVIDIA When2Call rows: a question, its tools, four candidate answers and which one is right.

    {"uuid", "question": str, "tools": [JSON strings], "correct_answer": "direct" | "tool_call" |
     "request_for_info" | "cannot_answer", "answers": {kind: str (tool_call: a JSON call)}}

The conversation is the question answered by the right candidate; `preferences` keeps them all:
{"correct": kind, "chosen": message, "rejected": [the three other messages],
 "rejected_kinds": [their kinds], "candidates": {kind: message}}.
"""

from __future__ import annotations

from polaris_dpo.messages import load_json, normalize_message
from polaris_dpo.readers.base import Reader as BaseReader
from polaris_dpo.readers.base import RowError, require

KINDS = ("direct", "tool_call", "request_for_info", "cannot_answer")


class Reader(BaseReader):
    wants = ("a When2Call JSONL file (none is bundled), e.g. data.path=when2call_test_llm_judge.jsonl "
             "from the nvidia/When2Call dataset")

    def convert(self, row: dict) -> dict:
        question = require(row, "question", str)
        answers = require(row, "answers", dict)
        correct = require(row, "correct_answer", str)
        if correct not in KINDS:
            raise RowError("correct_answer", f"unknown answer kind {correct!r} (expected one of {', '.join(KINDS)})")
        candidates = {}
        for kind in KINDS:
            text = answers.get(kind)
            if not isinstance(text, str):
                raise RowError(f"answers.{kind}", "missing required field" if text is None else "must be text")
            if kind == "tool_call":
                message = {"role": "assistant", "content": None, "tool_calls": [load_json(text, "answers.tool_call")]}
            else:
                message = {"role": "assistant", "content": text}
            candidates[kind] = normalize_message(message, f"answers.{kind}")
        rejected = [kind for kind in KINDS if kind != correct]
        conversation = {
            "messages": [{"role": "user", "content": question}, candidates[correct]],
            "tools": row.get("tools"),
            "preferences": {"correct": correct, "chosen": candidates[correct],
                            "rejected": [candidates[k] for k in rejected], "rejected_kinds": rejected,
                            "candidates": candidates},
        }
        if row.get("uuid") is not None:
            conversation["id"] = row["uuid"]
        return conversation
