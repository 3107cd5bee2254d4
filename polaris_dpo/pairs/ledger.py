"""The ledger of a mining run: every prompt, sample and perturbation counted with what became of it, so that the
counts add up to the pairs written."""

from __future__ import annotations

from polaris_dpo.pairs.outcome import PromptOutcome


def new_ledger() -> dict:
    return {"prompts": {"read": 0, "failed": 0, "clean": 0, "quarantined": 0},
            "items": {}, "counterweight": {"candidates": 0, "added": 0}}


def record(ledger: dict, outcome: PromptOutcome) -> None:
    ledger["prompts"]["read"] += 1
    ledger["prompts"][outcome.status] += 1
    for category, result in outcome.items:
        by = ledger["items"].setdefault(category, {})
        by[result] = by.get(result, 0) + 1
    if outcome.counterweight is not None:
        ledger["counterweight"]["candidates"] += 1


def move(ledger: dict, category: str, from_outcome: str, to_outcome: str) -> None:
    by = ledger["items"].setdefault(category, {})
    by[from_outcome] = by.get(from_outcome, 0) - 1
    by[to_outcome] = by.get(to_outcome, 0) + 1


def check_ledger(ledger: dict, pairs_by_category: dict[str, int]) -> list[str]:
    """Where the counts do not add up (empty when they do)."""
    problems = []
    p = ledger["prompts"]
    if p["read"] != p["failed"] + p["clean"] + p["quarantined"]:
        problems.append(f"prompts: read {p['read']} != failed {p['failed']} + clean {p['clean']} "
                        f"+ quarantined {p['quarantined']}")
    for category in set(pairs_by_category) | set(ledger["items"]):
        kept = ledger["items"].get(category, {}).get("pair", 0)
        extra = ledger["counterweight"]["added"] if category == "unwanted_call" else 0
        if pairs_by_category.get(category, 0) != kept + extra:
            problems.append(f"{category}: {pairs_by_category.get(category, 0)} pairs written, ledger says "
                            f"{kept} + {extra} counterweight")
    return problems


def format_ledger(ledger: dict) -> str:
    p = ledger["prompts"]
    lines = [f"prompts read {p['read']} = failed {p['failed']} + clean {p['clean']} + quarantined {p['quarantined']}"]
    for category in sorted(ledger["items"]):
        by = ledger["items"][category]
        parts = " + ".join(f"{name} {n}" for name, n in sorted(by.items()) if n)
        lines.append(f"  {category}: {sum(by.values())} = {parts}")
    cw = ledger["counterweight"]
    lines.append(f"  counterweight: {cw['added']} added of {cw['candidates']} candidates")
    return "\n".join(lines)
