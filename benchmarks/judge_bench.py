"""Verdicts per second on one core for single-call rows (goal: at least 20,000).

    .venv/bin/python benchmarks/judge_bench.py [--quick]

Rows: BFCL simple_python questions when ../shared/data is present (else synthetic ones), each
judged against a text in the polaris format: the reference call, a call with wrong values, and (against
the same row with a text reference) a text answer with spacing errors, in turn. The time includes parsing (`fmt.parse`) and judging.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from polaris_dpo import formats
from polaris_dpo.judge import judge

SHARED_BFCL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bfcl"


def _examples() -> list[dict]:
    questions = SHARED_BFCL / "BFCL_v4_simple_python.json"
    answers = SHARED_BFCL / "possible_answer" / "BFCL_v4_simple_python.json"
    if questions.is_file() and answers.is_file():
        from omegaconf import OmegaConf

        from polaris_dpo import messages, readers

        data = OmegaConf.create({"reader": "bfcl", "root": str(SHARED_BFCL), "path": questions.name,
                                 "answers": f"possible_answer/{answers.name}", "hub_id": None, "hub_split": "train",
                                 "limit": None, "eval_fraction": 1.0, "split_seed": 0, "quarantine": "quarantine.jsonl"})
        conversations, _ = readers.read_all(data, None)
        return [example for conversation in conversations for example in messages.examples(conversation)]
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}
    return [{"id": f"s{i}#1", "tools": [tool], "position": "first", "prompt": [],
             "reference": {"role": "assistant", "content": None, "tool_calls": [
                 {"type": "function", "function": {"name": "get_weather", "arguments": {"city": f"City {i}", "days": i}}}]},
             "acceptable": [{"name": "get_weather", "arguments": {"city": [f"City {i}"], "days": [i, ""]}}]}
            for i in range(400)]


def _cases(fmt, example: dict) -> list[tuple[dict, str]]:
    reference = example["reference"]
    eos = fmt.eos_token or ""
    right = fmt.render_assistant(reference)
    right = right[:-len(eos)] if eos and right.endswith(eos) else right
    call = reference["tool_calls"][0]["function"]
    wrong_arguments = {key: "zzz" for key in call["arguments"]} or {"x": 1}
    wrong = right.replace(json.dumps(call["arguments"], ensure_ascii=False),
                          json.dumps(wrong_arguments, ensure_ascii=False))
    text_example = {**example, "acceptable": None, "reference": {"role": "assistant", "content": "42."}}
    return [(example, right), (example, wrong),
            (text_example, "The answer is:42 ,as  computed from the numbers you gave.")]


def _rate(cases: list[tuple[dict, str]], fmt, budget: float, counts: dict) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        for example, text in cases:
            category = judge(text, example, fmt).category
            counts[category] = counts.get(category, 0) + 1
        done += len(cases)
    return done / (time.perf_counter() - start)


def run(quick: bool = False) -> dict:
    """Verdicts/s for single-call rows (the goal's figure), for spacing-error text answers, and mixed."""
    fmt = formats.get("polaris")
    cases = [case for example in _examples() for case in _cases(fmt, example)]
    calls = [case for i, case in enumerate(cases) if i % 3 != 2]
    texts = [case for i, case in enumerate(cases) if i % 3 == 2]
    budget = 1.0 if quick else 4.0
    counts: dict[str, int] = {}
    result = {
        "single_call_rows_per_second": round(_rate(calls, fmt, budget, counts)),
        "spacing_text_rows_per_second": round(_rate(texts, fmt, budget / 2, counts)),
        "mixed_per_second": round(_rate(cases, fmt, budget / 2, counts)),
    }
    return {**result, "rows": len(cases), "categories": counts, "goal_single_call": 20000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 2 s instead of 8 s")
    print(json.dumps(run(quick=parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
