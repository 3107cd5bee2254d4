"""Pairs: synthetic perturbation judged as made for (real glaive and BFCL data), mined pairs, pair set files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from polaris_dpo import formats, messages, pairs, paths, readers
from polaris_dpo.compose import compose
from polaris_dpo.config import FAILURE_CATEGORIES
from polaris_dpo.judge import judge

FMT = formats.get("polaris")


def _examples(*overrides: str, limit: int | None = None):
    cfg = compose(list(overrides))
    count = 0
    for conversation in readers.read(cfg.data):
        for example in messages.examples(conversation):
            yield example
            count += 1
            if limit and count >= limit:
                return


def _check_synthetic(examples) -> Counter:
    made = Counter()
    for example in examples:
        outcome = pairs.synthetic_pairs(example, FMT, categories=FAILURE_CATEGORIES, judge_options=None,
                                        provenance={"model": "synthetic", "seed": 0}, max_pairs=0)
        mismatches = [q["reason"] for q in outcome.quarantine if q["reason"].startswith("synthetic")]
        assert not mismatches, f"{example['id']}: {mismatches}"
        for row in outcome.pairs:
            made[row["category"]] += 1
            # the rejected, rendered as the model would write it, is judged as its category again
            rejected = messages.from_storage(row["rejected"])[0]
            text = rejected["content"] if row["category"] == "malformed_call" else pairs.rendered_text(FMT, rejected)
            assert judge(text, example, FMT).category == row["category"]
    return made





def test_every_synthetic_rejected_is_judged_as_its_category_on_glaive():
    made = _check_synthetic(_examples("data=glaive"))
    assert set(made) == set(FAILURE_CATEGORIES)  # every category made somewhere
    assert min(made.values()) >= 20


def test_every_synthetic_rejected_is_judged_as_its_category_on_bfcl(shared_data):
    if not Path(paths.PACKAGE_DIR / "readers" / "bfcl.py").exists():
        pytest.skip("the BFCL reader is not in this checkout yet")
    made = Counter()
    for name in ("simple_python", "multiple", "parallel", "irrelevance"):
        answers = ["data.answers=null"] if name == "irrelevance" else [f"data.answers=possible_answer/BFCL_v4_{name}.json"]
        made += _check_synthetic(_examples("data=bfcl", f"data.root={shared_data}/bfcl",
                                           f"data.path=BFCL_v4_{name}.json", *answers, limit=120))
    assert {"missed_call", "wrong_function", "wrong_arguments", "wrong_call_count", "malformed_call",
            "text_around_call", "unwanted_call"} <= set(made)


def _example(reference, tools=None, acceptable=None):
    return {"id": "t#1", "source": "test", "row": 3, "prompt": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": tools or [], "reference": reference, "acceptable": acceptable}


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}


def test_wrong_arguments_avoids_every_acceptable_value():
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"days": 3}}}
    example = _example({"role": "assistant", "content": None, "tool_calls": [call]}, [WEATHER],
                       acceptable=[{"name": "get_weather", "arguments": {"days": [3, 4, 5], "city": ["", "Paris"]}}])
    rejected = pairs.perturb(example, "wrong_arguments").message
    assert rejected["tool_calls"][0]["function"]["arguments"] == {"days": 6}
    assert judge(pairs.rendered_text(FMT, rejected), example, FMT).category == "wrong_arguments"


def test_unwanted_call_fills_required_arguments_from_the_schema():
    example = _example({"role": "assistant", "content": "It is sunny."}, [WEATHER])
    rejected = pairs.perturb(example, "unwanted_call").message
    assert rejected["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "example"}}
    assert pairs.perturb(_example({"role": "assistant", "content": "Hi."}), "unwanted_call") is None  # no tools


def test_mined_pairs_use_the_corrected_own_output_and_offer_a_counterweight():
    example = _example({"role": "assistant", "content": "The answer is: 42."}, [WEATHER, CLOCK])
    samples = ["Answer:42", "The answer is 42.", "Answer:42"]
    verdicts = [judge(s, example, FMT) for s in samples]
    assert [v.category for v in verdicts] == ["bad_spacing", "ok", "bad_spacing"]
    prov = [{"model": "m", "sampling": {"temperature": 0.8}, "seed": j} for j in range(3)]
    outcome = pairs.mined_pairs(example, samples, verdicts, categories=FAILURE_CATEGORIES, max_pairs=2,
                                provenance=prov)
    assert len(outcome.pairs) == 1  # the second "Answer:42" is an exact duplicate
    row = outcome.pairs[0]
    assert row["chosen"][0]["content"] == "Answer: 42" and row["chosen_source"] == "corrected"
    assert row["rejected"][0]["content"] == "Answer:42"
    assert (row["source"], row["source_row"], row["example_id"], row["seed"]) == ("test", 3, "t#1", 0)
    assert json.loads(row["sampling"]) == {"temperature": 0.8}
    assert sorted(outcome.items) == sorted([("bad_spacing", "pair"), ("ok", "ok"), ("bad_spacing", "duplicate")])
    counter = outcome.counterweight  # no own unwanted call: a synthetic one, chosen = the reference text
    assert counter["category"] == "unwanted_call" and counter["chosen"][0]["content"] == "The answer is: 42."
    assert json.loads(counter["rejected"][0]["tool_calls"][0]["function"]["arguments"])  # arguments as JSON string


def test_a_call_answered_in_prose_by_the_data_is_chosen_as_its_answer_key_and_offers_no_counterweight():
    # the demo's noisy rows: the reference is prose, `acceptable` holds the call the judge expects
    prose = {"role": "assistant", "content": "It is sunny in Paris."}
    example = _example(prose, [WEATHER], acceptable=[{"name": "get_weather", "arguments": {"city": ["Paris"]}}])
    samples = ["It is sunny in Paris.", '<|fn_start|>{"name": "get_weather", "arguments": {"city": "Paris"}}<|fn_end|>']
    verdicts = [judge(s, example, FMT) for s in samples]
    assert [v.category for v in verdicts] == ["missed_call", "ok"]
    outcome = pairs.mined_pairs(example, samples, verdicts, categories=FAILURE_CATEGORIES, max_pairs=2,
                                provenance=[{"model": "m", "seed": j} for j in range(2)])
    (row,) = outcome.pairs
    chosen = messages.from_storage(row["chosen"])[0]
    assert chosen["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert judge(pairs.rendered_text(FMT, chosen), example, FMT).ok
    assert outcome.counterweight is None  # a call is right here: no pair rewards staying in text
    synthetic = pairs.synthetic_pairs(example, FMT, categories=["missed_call", "unwanted_call"],
                                      judge_options=None, provenance={"model": "synthetic", "seed": 0})
    assert not synthetic.quarantine and [r["category"] for r in synthetic.pairs] == ["missed_call"]


def test_a_reference_call_with_prose_around_it_is_chosen_without_the_prose():
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    example = _example({"role": "assistant", "content": "Let me check.", "tool_calls": [call]}, [WEATHER])
    verdict = judge("It is sunny.", example, FMT)
    outcome = pairs.mined_pairs(example, ["It is sunny."], [verdict], categories=["missed_call"], max_pairs=1,
                                provenance=[{"model": "m", "seed": 0}])
    chosen = messages.from_storage(outcome.pairs[0]["chosen"])[0]
    assert chosen["content"] is None and judge(pairs.rendered_text(FMT, chosen), example, FMT).ok


def test_the_prose_kept_from_an_unwanted_call_has_its_spacing_fixed():
    example = _example({"role": "assistant", "content": "The answer is 42."}, [WEATHER])
    verdict = judge('Sure ,let me check.<|fn_start|>{"name": "get_weather", "arguments": {"city": "Paris"}}'
                    '<|fn_end|>', example, FMT)
    assert verdict.category == "unwanted_call" and verdict.correction["content"] == "Sure, let me check."
    assert judge(pairs.rendered_text(FMT, verdict.correction), example, FMT).ok


def test_an_empty_turn_is_never_the_chosen_answer():
    example = _example({"role": "assistant", "content": None}, [WEATHER])  # BFCL irrelevance: no reference text
    samples = ["<|im_end|>", "It will be sunny.", '<|fn_start|>{"name": "get_weather", "arguments": {"city": "Paris"}}'
                                                  "<|fn_end|>"]
    verdicts = [judge(s, example, FMT) for s in samples]
    assert [v.category for v in verdicts] == ["ok", "ok", "unwanted_call"]
    prov = [{"model": "m", "seed": j} for j in range(3)]
    for order in ([0, 1, 2], [1, 0, 2]):
        outcome = pairs.mined_pairs(example, [samples[j] for j in order], [verdicts[j] for j in order],
                                    categories=["unwanted_call"], max_pairs=2, provenance=prov)
        (row,) = outcome.pairs
        assert row["chosen_source"] == "own" and row["chosen"][0]["content"] == "It will be sunny."
    outcome = pairs.mined_pairs(example, [samples[0], samples[2]], [verdicts[0], verdicts[2]],
                                categories=["unwanted_call"], max_pairs=2, provenance=prov[:2])
    assert [r["chosen_source"] for r in outcome.pairs] == ["synthetic"]  # not the empty turn


def test_mined_pairs_respect_categories_and_the_per_prompt_cap():
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    example = _example({"role": "assistant", "content": None, "tool_calls": [call]}, [WEATHER, CLOCK])
    samples = ["It is sunny.", "Maybe sunny.", '<|fn_start|>{"name": "get_time", "arguments": {"zone": "x"}}<|fn_end|>',
               '<|fn_start|>{"name": "get_weather", "arguments": {"city": "Rome"}}<|fn_end|>']
    verdicts = [judge(s, example, FMT) for s in samples]
    assert [v.category for v in verdicts] == ["missed_call", "missed_call", "wrong_function", "wrong_arguments"]
    prov = [{"model": "m", "seed": j} for j in range(4)]
    outcome = pairs.mined_pairs(example, samples, verdicts, categories=["missed_call", "wrong_arguments"],
                                max_pairs=2, provenance=prov)
    assert [r["category"] for r in outcome.pairs] == ["missed_call", "wrong_arguments"]  # distinct categories first
    wrong_args = outcome.pairs[1]
    assert wrong_args["chosen_source"] == "corrected"  # its own call with the value fixed
    assert json.loads(wrong_args["chosen"][0]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert sorted(outcome.items) == sorted([("missed_call", "pair"), ("missed_call", "per_prompt_cap"),
                                            ("wrong_function", "category_off"), ("wrong_arguments", "pair")])
    assert outcome.counterweight is None  # the reference calls: no counterweight here


def _row(category="missed_call", user="hi"):
    example = _example({"role": "assistant", "content": "x"})
    example["prompt"] = [{"role": "user", "content": user}]
    return pairs.pair_row(example, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"},
                          category, "reference", {"model": "m", "seed": 1})


def _ledger_for(n: int) -> dict:
    ledger = pairs.new_ledger()
    for _ in range(n):
        pairs.record(ledger, pairs.PromptOutcome(pairs=[{}], items=[("missed_call", "pair")]))
    return ledger


def test_pair_set_is_written_atomically_and_loads(tmp_path):
    target = tmp_path / "pairs" / "demo"
    with pairs.PairSetWriter(target) as writer:
        for i in range(6):
            writer.add(_row(user=f"q{i}"), "test" if i == 0 else "train")
        writer.commit({"ledger": _ledger_for(6)}, {"config": "a: 1", "model": "m"})
    loaded = pairs.load(target)
    assert (loaded["train"].num_rows, loaded["test"].num_rows) == (5, 1)
    assert set(pairs.__dict__["CHOSEN_SOURCES"]) >= {loaded["train"][0]["chosen_source"]}
    card = (target / "README.md").read_text()
    assert "| `missed_call` | 5 | 1 |" in card and "a: 1" in card
    assert (target / "categories.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(RuntimeError), pairs.PairSetWriter(target) as writer:  # a crash midway: old set stays
        writer.add(_row(user="new"), "train")
        raise RuntimeError("killed")
    assert pairs.load(target)["train"].num_rows == 5
    assert [p.name for p in target.parent.iterdir()] == ["demo"]  # no staging left behind


def test_split_is_by_prompt():
    rows = [_row(user=f"q{i % 40}") for i in range(200)]
    sides = {}
    for row in rows:
        sides.setdefault(pairs.prompt_key(row), set()).add(pairs.is_test_prompt(row, 0.3, seed=1))
    assert all(len(s) == 1 for s in sides.values())
    assert 4 <= sum(True in s for s in sides.values()) <= 20
