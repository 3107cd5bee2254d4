"""The order DPO reads a pair set in: `dpo.pair_order`.

A `missed_call` pair (chosen: a call, rejected: text) pushes the model towards calling; an `unwanted_call`
pair (chosen: text, rejected: a call; counterweights too) pushes it away. Drawn at random, a step of a
few pairs often holds only one kind, and a short DPO run then moves the model's overall bias to call
rather than its decision per prompt. `call_balanced` fills every optimiser step with as many pairs of one
kind as of the other while both last, so that their pull on the bias cancels within the step.
"""

from __future__ import annotations

import math
import random
from collections import deque

PAIR_ORDERS = ("shuffled", "call_balanced")
CALL_OVER_TEXT, TEXT_OVER_CALL, OTHER = "call_over_text", "text_over_call", "other"
CATEGORY_DIRECTIONS = {"missed_call": CALL_OVER_TEXT, "unwanted_call": TEXT_OVER_CALL}


def call_direction(row: dict) -> str:
    """call_over_text | text_over_call | other: from the pair's `category` when it has one, else from whether
    each side's first message calls (a broken call is stored as text, so the category is the better guide)."""
    if row.get("category"):
        return CATEGORY_DIRECTIONS.get(row["category"], OTHER)
    chosen, rejected = row["chosen"], row["rejected"]
    chosen_calls = bool(chosen and chosen[0].get("tool_calls"))
    rejected_calls = bool(rejected and rejected[0].get("tool_calls"))
    if chosen_calls != rejected_calls:
        return CALL_OVER_TEXT if chosen_calls else TEXT_OVER_CALL
    return OTHER


def call_balanced_order(directions: list[str], step_size: int, seed: int) -> list[int]:
    """Row indices in reading order: consecutive blocks of `step_size` rows are the optimiser steps.

    Call-over-text and text-over-call rows are matched one to one (two consecutive steps hold a match
    when a step is one row). The matches are spread evenly over the blocks, each block is filled from
    the other rows in a seeded random order, and the rows left unmatched (the surplus of one kind, which
    would only push the bias) come after the others and the matches. A match is split across two steps
    only where a block has one place left and no other row remains to fill it.
    """
    if step_size < 1:
        raise ValueError(f"step_size={step_size}: at least 1")
    unknown = sorted(set(directions) - {CALL_OVER_TEXT, TEXT_OVER_CALL, OTHER})
    if unknown:
        raise ValueError(f"unknown call directions {unknown}")
    rng = random.Random(seed)
    by_direction = {d: [i for i, x in enumerate(directions) if x == d] for d in (CALL_OVER_TEXT, TEXT_OVER_CALL)}
    for rows in by_direction.values():
        rng.shuffle(rows)
    matched = min(len(rows) for rows in by_direction.values())
    matches = deque((by_direction[CALL_OVER_TEXT][i], by_direction[TEXT_OVER_CALL][i]) for i in range(matched))
    unmatched = by_direction[CALL_OVER_TEXT][matched:] + by_direction[TEXT_OVER_CALL][matched:]
    others = [i for i, x in enumerate(directions) if x == OTHER]
    rng.shuffle(others)
    rng.shuffle(unmatched)
    others, unmatched = deque(others), deque(unmatched)

    block_size = max(step_size, 2)
    blocks = max(1, math.ceil((len(directions) - len(unmatched)) / block_size))
    total_matches = len(matches)
    order: list[int] = []
    while matches or others or unmatched:
        due = math.ceil((len(order) // block_size + 1) * total_matches / blocks) - (total_matches - len(matches))
        block = [i for _ in range(min(due, block_size // 2, len(matches))) for i in matches.popleft()]
        for source in (others, matches, unmatched):  # the places left: other rows, whole matches, unmatched rows
            while source and len(block) + (2 if source is matches else 1) <= block_size:
                block += source.popleft() if source is matches else [source.popleft()]
        if len(block) < block_size and matches:  # one place left and only matches remain: they split from here on
            others.extend(i for match in matches for i in match)
            matches.clear()
            while len(block) < block_size and others:
                block.append(others.popleft())
        order += block
    return order
