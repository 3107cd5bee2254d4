"""Verdicts per second (parse + judge): a thin adapter over `benchmarks/judge_bench.py` for the runner."""

from __future__ import annotations

from benchmarks._adapt import as_report

UNITS = {"single_call_rows_per_second": "verdicts/s", "spacing_text_rows_per_second": "verdicts/s",
         "mixed_per_second": "verdicts/s", "rows": "rows", "goal_single_call": "verdicts/s"}


def run(quick: bool) -> dict:
    from benchmarks import judge_bench

    return as_report(judge_bench.run(quick=quick), "Judge: verdicts per second (parse + judge, one process)", UNITS)
