"""What one prompt gave (`PromptOutcome`: candidate pairs, a counterweight candidate, the ledger entry of each
sample or perturbation), and the per-prompt cap that chooses which candidates become pairs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class PromptOutcome:
    """What one prompt gave: candidate pairs, a counterweight candidate, and the ledger of its items."""

    pairs: list[dict] = field(default_factory=list)
    counterweight: dict | None = None
    items: list[tuple[str, str]] = field(default_factory=list)  # (category, outcome) per sample / perturbation
    quarantine: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.pairs:
            return "failed"
        return "quarantined" if self.quarantine and not self.items else "clean"


def keep_within_prompt(candidates: list[tuple[str, dict]], outcome: PromptOutcome, max_pairs: int) -> None:
    """Per prompt: drop exact duplicates, then keep at most `max_pairs`, one per category before repeats."""
    seen, unique = set(), []
    for category, row in candidates:  # one prompt: chosen and rejected tell its pairs apart
        key = json.dumps([row["chosen"], row["rejected"]], sort_keys=True)
        if key in seen:
            outcome.items.append((category, "duplicate"))
        else:
            seen.add(key)
            unique.append((category, row))
    firsts, repeats, categories = [], [], set()
    for category, row in unique:
        (repeats if category in categories else firsts).append((category, row))
        categories.add(category)
    ordered = firsts + repeats
    for rank, (category, row) in enumerate(ordered):
        if max_pairs > 0 and rank >= max_pairs:
            outcome.items.append((category, "per_prompt_cap"))
        else:
            outcome.items.append((category, "pair"))
            outcome.pairs.append(row)
