"""Pairs from a model's own samples: chosen = its output corrected, else the reference; rejected = the sample."""

from __future__ import annotations

from collections.abc import Iterable

from polaris_dpo.judge import expected_calls
from polaris_dpo.pairs.outcome import PromptOutcome, keep_within_prompt
from polaris_dpo.pairs.rows import is_call, pair_row, reference_answer, stored_prompt
from polaris_dpo.pairs.synthetic import perturb


def mined_pairs(example: dict, samples: list[str], verdicts: list, *, categories: Iterable[str],
                max_pairs: int, provenance: list[dict], counterweight: bool = True) -> PromptOutcome:
    """Pairs from the model's samples: chosen = its own output corrected, else the reference; rejected = the sample.

    `provenance[j]` describes sample j (model, sampling, seed). With `counterweight`, a prompt whose
    reference answers in text also offers one counterweight candidate (an unneeded call as rejected):
    the model's own unwanted call when it made one, else a synthetic one.
    """
    wanted = set(categories)
    outcome = PromptOutcome()
    candidates, own_ok = [], None
    for verdict, prov in zip(verdicts, provenance, strict=True):
        if verdict.category == "ok":
            outcome.items.append(("ok", "ok"))
            if is_call(verdict.parsed) or (verdict.parsed.get("content") or "").strip():
                own_ok = own_ok or verdict.parsed  # an empty turn passes BFCL's irrelevance check but is no answer
            continue
        if verdict.category not in wanted:
            outcome.items.append((verdict.category, "category_off"))
            continue
        candidates.append((verdict, prov))
    wants_counterweight = counterweight and not expected_calls(example) and bool(example.get("tools"))
    if not candidates and not wants_counterweight:
        return outcome
    stored = stored_prompt(example)
    reference, reference_source = reference_answer(example)
    if reference_source == "synthetic" and own_ok is not None:
        reference, reference_source = own_ok, "own"  # no reference text: the model's own right answer
    rows = []
    for verdict, prov in candidates:
        chosen, source = ((verdict.correction, "corrected") if verdict.correction is not None
                          else (reference, reference_source))
        rows.append((verdict.category, pair_row(example, chosen, verdict.parsed, verdict.category, source, prov,
                                                stored)))
    keep_within_prompt(rows, outcome, max_pairs)
    if wants_counterweight:
        own_calls = [(v, p) for v, p in zip(verdicts, provenance, strict=True) if v.category == "unwanted_call"]
        if own_calls:
            verdict, prov = own_calls[0]
            outcome.counterweight = pair_row(example, reference, verdict.parsed, "unwanted_call", reference_source,
                                             prov, stored)
        else:
            rejected = perturb(example, "unwanted_call")
            if rejected is not None:
                prov = {**provenance[0], "model": "synthetic", "sampling": {"perturbation": "unwanted_call"}}
                outcome.counterweight = pair_row(example, reference, rejected.message, "unwanted_call",
                                                 reference_source, prov, stored)
    return outcome
