"""A pair row and its parts: assistant messages as a pair stores them, the chosen answer from the answer key,
and the identities that deduplicate pairs and split prompts into train and test.

A pair row (docs/architecture.md): `prompt`, `chosen`, `rejected` (messages, storage form), `tools`
(JSON string), `category`, `chosen_source`, and provenance (`source`, `source_row`, `example_id`,
`model`, `sampling`, `seed`).
"""

from __future__ import annotations

import hashlib
import json

from polaris_dpo import messages as msgs
from polaris_dpo.judge import expected_message, fix_spacing

# Chosen answer for a prompt no function fits when the data gives no text (BFCL irrelevance).
NO_FITTING_FUNCTION = "None of the available functions can do that, so I cannot help with this request."
CHOSEN_SOURCES = ("corrected", "reference", "own", "synthetic", "dataset")


def assistant(content: str | None = None, tool_calls: list[dict] | None = None) -> dict:
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def clean_message(message: dict) -> dict:
    """An assistant message as a pair stores it: content and calls only (no parse_error, no ids)."""
    calls = [{"type": "function", "function": {"name": c["function"]["name"],
                                               "arguments": c["function"].get("arguments") or {}}}
             for c in message.get("tool_calls") or []]
    return assistant(message.get("content"), calls)


def is_call(message: dict) -> bool:
    return bool(message.get("tool_calls"))


def reference_answer(example: dict) -> tuple[dict, str]:
    """(chosen message, chosen_source) from the answer key: the expected calls alone (no prose around
    them), else the reference text spacing-fixed, else a stock text answer."""
    reference = example["reference"]
    if is_call(reference):
        return assistant(None, clean_message(reference)["tool_calls"]), "reference"
    expected = expected_message(example)
    if expected is not None:  # the data answered in prose and kept the call as its answer key
        return expected, "reference"
    text = reference.get("content")
    if text and text.strip():
        return assistant(fix_spacing(text)), "reference"
    return assistant(NO_FITTING_FUNCTION), "synthetic"


def stored_prompt(example: dict) -> dict:
    """The prompt side of every pair of `example`, in storage form (computed once per prompt)."""
    return {"prompt": msgs.to_storage(example["prompt"]),
            "tools": json.dumps(example.get("tools") or [], ensure_ascii=False)}


def pair_row(example: dict, chosen: dict, rejected: dict, category: str, chosen_source: str,
             provenance: dict, stored: dict | None = None) -> dict:
    stored = stored or stored_prompt(example)
    return {"prompt": stored["prompt"], "chosen": msgs.to_storage([clean_message(chosen)]),
            "rejected": msgs.to_storage([clean_message(rejected)]), "tools": stored["tools"],
            "category": category, "chosen_source": chosen_source,
            "source": str(example.get("source") or ""), "source_row": int(example.get("row") or 0),
            "example_id": str(example["id"]), "model": str(provenance.get("model", "")),
            "sampling": json.dumps(provenance.get("sampling") or {}, sort_keys=True),
            "seed": int(provenance.get("seed", 0))}


def pair_key(row: dict) -> str:
    """Identity of a pair for exact-duplicate removal."""
    body = json.dumps([row["prompt"], row["chosen"], row["rejected"], row["tools"]], sort_keys=True)
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


def prompt_key(row_or_example: dict) -> str:
    """Identity of a prompt (its messages and tools): the unit of the train/test split."""
    prompt, tools = row_or_example["prompt"], row_or_example.get("tools") or []
    if not isinstance(tools, str):
        tools = json.dumps(tools, sort_keys=True, ensure_ascii=False)
    body = json.dumps([msgs.to_storage(prompt) if prompt and isinstance(prompt[0], dict) else prompt, tools],
                      sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


def is_test_prompt(row: dict, test_fraction: float, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{prompt_key(row)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < test_fraction
