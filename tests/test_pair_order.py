"""dpo.pair_order=call_balanced: each optimiser step holds as many call-over-text as text-over-call pairs,
and the DPO trainer reads the pairs in that order."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dpo import sft_adapter  # noqa: F401  (fixture)
from test_sft import QUICK, TINY, WEATHER_TOOL, write_pairs

from polaris_dpo import messages
from polaris_dpo.pairs.order import (
    CALL_OVER_TEXT,
    OTHER,
    TEXT_OVER_CALL,
    call_balanced_order,
    call_direction,
)

CALL = [{"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]
TEXT = [{"role": "assistant", "content": "Hello."}]


def blocks(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def kinds(block: list[int], directions: list[str]) -> Counter:
    return Counter(directions[i] for i in block)


def test_call_direction_follows_the_category_else_the_first_message_of_each_side():
    assert call_direction({"chosen": CALL, "rejected": TEXT}) == CALL_OVER_TEXT
    assert call_direction({"chosen": TEXT, "rejected": CALL}) == TEXT_OVER_CALL
    assert call_direction({"chosen": CALL, "rejected": CALL}) == OTHER
    assert call_direction({"chosen": TEXT, "rejected": TEXT}) == OTHER
    # a broken call is stored as text: the category says it is not a call decision
    assert call_direction({"chosen": CALL, "rejected": TEXT, "category": "malformed_call"}) == OTHER
    assert call_direction({"chosen": CALL, "rejected": TEXT, "category": "missed_call"}) == CALL_OVER_TEXT
    assert call_direction({"chosen": TEXT, "rejected": CALL, "category": "unwanted_call"}) == TEXT_OVER_CALL


directions_strategy = st.lists(st.sampled_from([CALL_OVER_TEXT, TEXT_OVER_CALL, OTHER]), max_size=80)


@settings(max_examples=200, deadline=None)
@given(directions=directions_strategy, step_size=st.integers(1, 9), seed=st.integers(0, 2**32))
def test_the_order_is_a_seeded_permutation(directions, step_size, seed):
    order = call_balanced_order(directions, step_size, seed)
    assert sorted(order) == list(range(len(directions)))
    assert order == call_balanced_order(directions, step_size, seed)


@settings(max_examples=200, deadline=None)
@given(matched=st.integers(0, 30), others=st.integers(0, 40), half_step=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_equal_kinds_are_balanced_in_every_step(matched, others, half_step, seed):
    size = 2 * half_step
    directions = [CALL_OVER_TEXT] * matched + [TEXT_OVER_CALL] * matched + [OTHER] * others
    unbalanced = [b for b in blocks(call_balanced_order(directions, size, seed), size)
                  if kinds(b, directions)[CALL_OVER_TEXT] != kinds(b, directions)[TEXT_OVER_CALL]]
    # only where the other rows ran out with one place left does a match split across two steps
    assert len(unbalanced) <= 2


def test_a_demo_sized_set_spreads_its_matches_over_the_steps():
    directions = [CALL_OVER_TEXT] * 41 + [TEXT_OVER_CALL] * 32 + [OTHER] * 61
    steps = blocks(call_balanced_order(directions, 4, seed=42), 4)
    assert len(steps) == 34
    counts = [kinds(step, directions) for step in steps]
    assert sum(c[TEXT_OVER_CALL] == 1 for c in counts) == 32  # one text-over-call pair in each of 32 steps
    assert all(c[CALL_OVER_TEXT] >= c[TEXT_OVER_CALL] for c in counts)
    # the 16 steps a short run takes: one match and two other rows each; the 9 unmatched calls over text come last
    assert all(c == Counter({CALL_OVER_TEXT: 1, TEXT_OVER_CALL: 1, OTHER: 2}) for c in counts[:16])
    assert sum(counts[-3:], Counter())[CALL_OVER_TEXT] >= 9


def test_step_size_one_alternates_and_spreads_the_other_rows():
    directions = [CALL_OVER_TEXT] * 3 + [TEXT_OVER_CALL] * 3
    order = call_balanced_order(directions, 1, seed=0)
    assert [directions[i] for i in order] == [CALL_OVER_TEXT, TEXT_OVER_CALL] * 3
    directions += [OTHER] * 6
    read = [directions[i] for i in call_balanced_order(directions, 1, seed=0)]
    assert OTHER in read[:4] and Counter(read[:6])[OTHER] < 6


def write_mixed_pairs(folder, n: int = 12, too_long: int = 0):
    """write_pairs' call-over-text rows, then as many text-over-call rows after them, then `too_long`
    call-over-text rows whose prompt alone is longer than any max_length used here."""
    write_pairs(folder, n=n // 2)
    with open(folder / "train.jsonl", "a") as handle:
        for i in range(n // 2):
            row = {"prompt": [{"role": "user", "content": f"Say hello number {i}."}],
                   "chosen": [{"role": "assistant", "content": f"Hello number {i}."}],
                   "rejected": [{"role": "assistant", "content": None, "tool_calls": [
                       {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}],
                   "tools": [WEATHER_TOOL], "category": "unwanted_call", "chosen_source": "reference",
                   "source": "synthetic", "source_row": i, "example_id": f"t{i}#0", "model": "tiny",
                   "sampling": "{}", "seed": 0}
            handle.write(json.dumps(messages.to_storage(row)) + "\n")
        first = json.loads((folder / "train.jsonl").read_text().splitlines()[0])
        for _ in range(too_long):
            first["prompt"][0]["content"] = "What is the weather " + "very " * 600 + "far away?"
            handle.write(json.dumps(first) + "\n")
    return folder


def test_the_trainer_reads_the_pairs_in_call_balanced_order(make_cfg, tmp_path, sft_adapter):  # noqa: F811
    from polaris_dpo.stages import dpo

    pairs = write_mixed_pairs(tmp_path / "pairs", too_long=1)
    cfg = make_cfg("stage=dpo", *TINY, *QUICK, "dpo.pair_order=call_balanced", "dpo.per_device_train_batch_size=2",
                   "dpo.max_steps=6", "dpo.max_length=256", f"dpo.pairs={pairs}", f"dpo.sft_model={sft_adapter}")
    trainer = dpo.build(cfg)["trainer"]
    rows = dpo.load_pairs(pairs).select(range(12))  # TRL drops the 13th row: its prompt alone fills max_length
    seen = []
    for batch in trainer.get_train_dataloader():  # rows: the pairs' chosen sequences, then their rejected ones
        chosen = batch["input_ids"][: len(batch["input_ids"]) // 2]
        assert len(chosen) == 2
        seen += [trainer.processing_class.decode(ids, skip_special_tokens=True) for ids in chosen]
    assert len(seen) == 12
    for step in blocks(seen, 2):  # one greeting (text over call) and one weather question (call over text)
        assert sum("Say hello" in text for text in step) == 1, step
    assert [row["prompt"][-1]["content"].startswith("Say hello") for row in rows] == [False] * 6 + [True] * 6


def test_call_balanced_refuses_a_sampling_strategy_of_its_own(make_cfg, tmp_path, sft_adapter):  # noqa: F811
    from polaris_dpo.stages import dpo

    cfg = make_cfg("stage=dpo", *TINY, *QUICK, "dpo.pair_order=call_balanced",
                   "+dpo.trl.train_sampling_strategy=random", f"dpo.pairs={write_mixed_pairs(tmp_path / 'pairs')}",
                   f"dpo.sft_model={sft_adapter}")
    with pytest.raises(ValueError, match="dpo.pair_order=call_balanced.*train_sampling_strategy=random"):
        dpo.build(cfg)
    with pytest.raises(ValueError, match="dpo.pair_order='bogus'"):
        dpo.build(make_cfg("stage=dpo", *TINY, "dpo.pair_order=bogus"))
