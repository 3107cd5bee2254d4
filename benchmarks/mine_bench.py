"""Mining throughput without generation: samples judged and turned into pairs per second (goal: at least 10,000).

    .venv/bin/python benchmarks/mine_bench.py [--quick]

Prompts: the bundled glaive sample's prediction points (calls and text answers). Each prompt gets four
"samples" in the polaris format, as a model would write them: the reference itself and three of its
synthetic failures (in turn over the categories that apply). Timed per prompt: `judge` on every sample
(parse included), `pairs.mined_pairs` (chosen/rejected, corrections, within-prompt dedupe and cap,
counterweight candidate, rows in storage form), and the JSON line each row becomes in a shard.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

from polaris_dpo import formats, messages, pairs, readers
from polaris_dpo.compose import compose
from polaris_dpo.config import FAILURE_CATEGORIES
from polaris_dpo.judge import judge

SAMPLES_PER_PROMPT = 4


def _workload(fmt, limit: int | None) -> list[tuple[dict, list[str]]]:
    cfg = compose(["data=glaive"])
    work = []
    for conversation in readers.read(cfg.data):
        for example in messages.examples(conversation):
            chosen, _ = pairs.reference_answer(example)
            failures = []
            for category in FAILURE_CATEGORIES:
                made = pairs.perturb(example, category, fmt)
                if made is not None:
                    failures.append(made.text if made.text is not None else pairs.rendered_text(fmt, made.message))
            if not failures:
                continue
            cycle = itertools.cycle(failures)
            samples = [pairs.rendered_text(fmt, chosen)] + [next(cycle) for _ in range(SAMPLES_PER_PROMPT - 1)]
            work.append((example, samples))
    return work[:limit] if limit else work


def _mine(fmt, work, counts) -> None:
    for example, samples in work:
        verdicts = [judge(text, example, fmt) for text in samples]
        provenance = [{"model": "bench", "sampling": {"temperature": 0.8}, "seed": j} for j in range(len(samples))]
        outcome = pairs.mined_pairs(example, samples, verdicts, categories=FAILURE_CATEGORIES, max_pairs=2,
                                    provenance=provenance)
        for row in outcome.pairs:
            counts["bytes"] += len(json.dumps({"pair": row}, ensure_ascii=False))
        counts["samples"] += len(samples)
        counts["pairs"] += len(outcome.pairs)
        counts["failures"] += sum(v.category != "ok" for v in verdicts)


def run(quick: bool = False) -> dict:
    fmt = formats.get("polaris")
    work = _workload(fmt, 100 if quick else None)
    budget = 0.5 if quick else 3.0
    counts = {"samples": 0, "pairs": 0, "failures": 0, "bytes": 0}
    _mine(fmt, work[:20], dict(counts))  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < budget:
        _mine(fmt, work, counts)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rate, cpu_rate = counts["samples"] / elapsed, counts["samples"] / cpu
    return {
        "title": "Mining without generation (judge + pair building), one process",
        "rows": [("samples judged and paired (per CPU second: one core's rate)", round(cpu_rate), "samples/s"),
                 ("samples judged and paired (wall clock)", round(rate), "samples/s"),
                 ("pairs built (per CPU second)", round(counts["pairs"] / cpu), "pairs/s"),
                 ("goal", 10000, "samples/s")],
        "notes": [f"{len(work)} glaive prompts x {SAMPLES_PER_PROMPT} samples (reference + 3 synthetic failures), "
                  f"{counts['failures'] / max(counts['samples'], 1):.0%} failures; {elapsed:.1f} s wall, "
                  f"{cpu:.1f} s CPU (wall is slower when other processes share the core)",
                  "meets the goal" if cpu_rate >= 10000 else "below the goal of 10,000 samples/s"],
        "samples_per_s": cpu_rate,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="mining throughput without generation")
    parser.add_argument("--quick", action="store_true")
    result = run(quick=parser.parse_args().quick)
    for label, value, unit in result["rows"]:
        print(f"{label}: {value} {unit}")
    for note in result["notes"]:
        print(note)
