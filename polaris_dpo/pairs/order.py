"""The order DPO reads a pair set in: `dpo.pair_order`.

A pair whose chosen answer is a call and whose rejected one is text (call over text) pushes the model
towards calling; text over call pushes it away. Drawn at random, a step of a few pairs often holds
only one kind, and a short DPO run then moves the model's overall bias to call rather than its
decision per prompt. `call_balanced` fills every optimiser step with as many pairs of one kind as of
the other while both last, so that their pull on the bias cancels within the step.
"""

from __future__ import annotations

import math
import random

PAIR_ORDERS = ("shuffled", "call_balanced")
CALL_OVER_TEXT, TEXT_OVER_CALL, OTHER = "call_over_text", "text_over_call", "other"


def call_direction(chosen: list[dict], rejected: list[dict]) -> str:
    """call_over_text | text_over_call | other, from the first message of each side."""
    chosen_calls, rejected_calls = bool(chosen and chosen[0].get("tool_calls")), bool(rejected and rejected[0].get("tool_calls"))
    if chosen_calls and not rejected_calls:
        return CALL_OVER_TEXT
    if rejected_calls and not chosen_calls:
        return TEXT_OVER_CALL
    return OTHER


def call_balanced_order(directions: list[str], step_size: int, seed: int) -> list[int]:
    """Row indices in reading order: consecutive blocks of `step_size` rows are the optimiser steps.

    Call-over-text and text-over-call rows are matched one to one; each step takes its share of those
    matches (never split across steps when the step holds two rows or more), and the rest of each step
    is filled from the other rows, unmatched ones included, in a seeded random order.
    """
    if step_size < 1:
        raise ValueError(f"step_size={step_size}: at least 1")
    rng = random.Random(seed)
    by_direction = {d: [i for i, x in enumerate(directions) if x == d] for d in (CALL_OVER_TEXT, TEXT_OVER_CALL)}
    unknown = sorted(set(directions) - {CALL_OVER_TEXT, TEXT_OVER_CALL, OTHER})
    if unknown:
        raise ValueError(f"unknown call directions {unknown}")
    for rows in by_direction.values():
        rng.shuffle(rows)
    matched = min(len(rows) for rows in by_direction.values())
    matches = [[by_direction[CALL_OVER_TEXT][i], by_direction[TEXT_OVER_CALL][i]] for i in range(matched)]
    rest = [i for i, x in enumerate(directions) if x == OTHER]
    rest += by_direction[CALL_OVER_TEXT][matched:] + by_direction[TEXT_OVER_CALL][matched:]
    rng.shuffle(rest)
    if step_size == 1:  # a step holds one row: the two kinds alternate from step to step
        return [i for match in matches for i in match] + rest

    steps = math.ceil(len(directions) / step_size)
    per_step = min(step_size // 2, math.ceil(len(matches) / steps)) if matches else 0
    order: list[int] = []
    while matches or rest:
        block = [i for _ in range(min(per_step, len(matches))) for i in matches.pop(0)]
        while len(block) < step_size and rest:
            block.append(rest.pop(0))
        while len(block) + 2 <= step_size and matches:
            block += matches.pop(0)
        if len(block) < step_size and matches:  # an odd place left and only matches: they now split across steps
            rest = [i for match in matches for i in match]
            matches = []
            while len(block) < step_size and rest:
                block.append(rest.pop(0))
        order += block
    return order
