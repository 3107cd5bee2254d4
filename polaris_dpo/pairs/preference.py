"""Pairs from labelled preference data (When2Call): one per rejected candidate, chosen = the right answer."""

from __future__ import annotations

from polaris_dpo import messages as msgs
from polaris_dpo.judge import judge_message
from polaris_dpo.pairs.outcome import PromptOutcome, keep_within_prompt
from polaris_dpo.pairs.rows import pair_row


def preference_pairs(example: dict, provenance: dict, judge_options=None) -> PromptOutcome:
    """One pair per rejected candidate of a labelled preference row: chosen = the right answer.

    The category is the judge's verdict on the rejected answer against the chosen one (a call where
    text was right is unwanted_call, and so on). A rejected text answer against a chosen text answer
    (When2Call's direct answer vs asking back) fits no failure category: counted as `judged_alike`,
    not paired. Rows without a chosen and a rejected answer are quarantined.
    """
    outcome = PromptOutcome()
    prefs = example.get("preferences") or {}
    chosen = prefs.get("chosen")
    rejected = prefs.get("rejected") or []
    if not chosen or not rejected:
        outcome.quarantine.append({"example_id": example["id"], "source": example.get("source"),
                                   "row": example.get("row"), "reason": "preferences: no chosen or no rejected answer"})
        return outcome
    chosen = msgs.normalize_message(chosen, "preferences.chosen")
    target = {**example, "reference": chosen, "acceptable": None}
    rows = []
    for i, message in enumerate(rejected):
        message = msgs.normalize_message(message, f"preferences.rejected[{i}]")
        verdict = judge_message(message, target, judge_options) if judge_options else judge_message(message, target)
        category = verdict.category
        if category == "ok":  # text against text (a direct answer where asking back was right): no category
            outcome.items.append(("ok", "judged_alike"))
            continue
        label = (prefs.get("rejected_kinds") or [None] * len(rejected))[i]
        prov = {**provenance, "sampling": {"dataset_label": label} if label else {}}
        rows.append((category, pair_row(example, chosen, message, category, "dataset", prov)))
    keep_within_prompt(rows, outcome, 0)
    return outcome
