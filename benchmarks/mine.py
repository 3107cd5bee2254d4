"""Judging plus pair building per second, generation excluded: a thin adapter over `benchmarks/mine_bench.py`."""

from __future__ import annotations

from benchmarks._adapt import as_report


def run(quick: bool) -> dict:
    from benchmarks import mine_bench

    result = mine_bench.run(quick=quick)
    return as_report(result, result.get("title", "Mining without generation (judge + pair building)"),
                     {"samples_per_s": "samples/s"})
