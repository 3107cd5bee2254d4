"""Synthetic failures: the reference answer perturbed into each failure category, kept as a pair when the judge
files it under that category."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from polaris_dpo.judge import expected_calls, expected_message, fix_spacing, judge
from polaris_dpo.pairs.outcome import PromptOutcome, keep_within_prompt
from polaris_dpo.pairs.rows import assistant, clean_message, is_call, pair_row, reference_answer
from polaris_dpo.typography import find_issues

TEXT_AROUND = "Sure, let me take care of that for you."  # the prose a text_around_call perturbation puts first


@dataclass
class Perturbation:
    message: dict  # the rejected assistant message
    text: str | None = None  # the generated text, when it is not the format's rendering of `message`


def _rng(example: dict, category: str) -> random.Random:
    return random.Random(hashlib.sha256(f"{example['id']}:{category}".encode()).digest())


def _placeholder(schema: dict):
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if schema.get("enum"):
        return schema["enum"][0]
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True, "array": [],
            "object": {}}.get(kind, "example")


def _call(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_names(example: dict) -> list[str]:
    return [(t.get("function") or t).get("name") for t in example.get("tools") or [] if (t.get("function") or t).get("name")]


def _changed_value(value, alternatives: list):
    """A value of the same JSON type that none of `alternatives` accepts (None when there is none)."""
    if isinstance(value, bool):
        new = not value
        if any(isinstance(a, bool) and a == new for a in alternatives):
            return None  # both truth values are acceptable: no wrong value of this type
    elif isinstance(value, int):
        new = value + 1
        while new in alternatives:
            new += 1
    elif isinstance(value, float):
        new = value * 2 + 1.5
    elif isinstance(value, str):
        new = value + "q" if value else "q"
        while new in alternatives or new.lower() in [str(a).lower() for a in alternatives]:
            new += "q"
    else:
        return None
    return new


def _wrong_arguments(call: dict, expected: dict) -> dict:
    arguments = dict(call["function"]["arguments"])
    for name in sorted(arguments):
        new = _changed_value(arguments[name], expected["arguments"].get(name, [arguments[name]]))
        if new is not None:
            arguments[name] = new
            return _call(call["function"]["name"], arguments)
    arguments["unexpected_argument"] = "q"
    return _call(call["function"]["name"], arguments)


def _prose_for(calls: list[dict]) -> str:
    parts = []
    for call in calls:
        args = call["function"]["arguments"]
        settings = " and ".join(f"{k} set to {json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
        parts.append(f"the {call['function']['name']} function" + (f" with {settings}" if settings else ""))
    return "To answer this I would use " + ", then ".join(parts) + "."


def _break_spacing(text: str) -> str | None:
    """`text` with one spacing error put in (a space lost after punctuation, or a space before a comma)."""
    before = len(find_issues(text))
    for pattern, repl in ((r"(?<=[A-Za-z]): (?=[A-Za-z0-9])", ":"), (r"(?<=[A-Za-z]), (?=[A-Za-z])", ","),
                          (r"(?<=[a-z])\. (?=[A-Z][a-z])", "."), (r"(?<=[A-Za-z]), (?=[A-Za-z])", " ,"),
                          (r"(?<=[A-Za-z]) (?=[A-Za-z])", "  ")):
        for match in re.finditer(pattern, text):
            broken = text[:match.start()] + repl + text[match.end():]
            if len(find_issues(broken)) > before:
                return broken
    return None


def perturb(example: dict, category: str, fmt=None) -> Perturbation | None:
    """The reference turned into a failure of `category`, or None when that failure does not apply.

    Calls: missed_call (the call retold in prose), wrong_function (another tool, or a renamed one),
    wrong_arguments (a value changed, else an unexpected argument), wrong_call_count (a call repeated
    or, for parallel calls, one left out), malformed_call (the rendered call's JSON broken, needs
    `fmt`), text_around_call (prose put before the call). Text answers: unwanted_call (a tool called
    with placeholder arguments), bad_spacing (one spacing error put in).
    """
    reference = example["reference"]
    if not is_call(reference):
        reference = expected_message(example) or reference  # a call answered in prose: its answer key
    calls = [_call(c["function"]["name"], dict(c["function"].get("arguments") or {}))
             for c in reference.get("tool_calls") or []]
    rng = _rng(example, category)
    if not calls:
        if category == "unwanted_call":
            tools = [t.get("function") or t for t in example.get("tools") or []]
            tools = [t for t in tools if t.get("name")]
            if not tools:
                return None
            tool = rng.choice(tools)
            params = tool.get("parameters") or {}
            props = params.get("properties") or {}
            arguments = {name: _placeholder(props.get(name) or {}) for name in params.get("required") or []}
            return Perturbation(assistant(None, [_call(tool["name"], arguments)]))
        if category == "bad_spacing":
            text = reference.get("content")
            broken = _break_spacing(fix_spacing(text)) if text else None
            return Perturbation(assistant(broken)) if broken else None
        return None
    if category == "missed_call":
        return Perturbation(assistant(_prose_for(calls)))
    if category == "wrong_call_count":
        changed = calls[:-1] if len(calls) > 1 else calls + [copy.deepcopy(calls[-1])]
        return Perturbation(assistant(None, changed))
    if category == "text_around_call":
        return Perturbation(assistant(TEXT_AROUND, calls))
    if category == "malformed_call":
        if fmt is None:
            return None
        text = rendered_text(fmt, assistant(None, calls))
        cut = text.rfind("}")
        if cut == -1:
            return None
        broken = text[:cut] + text[cut + 1:]
        return Perturbation(assistant(broken), broken)
    if len(calls) != 1:
        return None  # wrong_function / wrong_arguments: unambiguous on single calls only
    if category == "wrong_function":
        others = [name for name in _tool_names(example) if name != calls[0]["function"]["name"]]
        name = rng.choice(others) if others else calls[0]["function"]["name"] + "_v2"
        return Perturbation(assistant(None, [_call(name, calls[0]["function"]["arguments"])]))
    if category == "wrong_arguments":
        return Perturbation(assistant(None, [_wrong_arguments(calls[0], expected_calls(example)[0])]))
    return None


def rendered_text(fmt, message: dict) -> str:
    """What the model generates for `message`, up to the end of turn (not included), as `sample.generate` returns it."""
    text = fmt.render_assistant(message)
    for stop in [fmt.eos_token, *(fmt.stop_strings or [])]:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text


def synthetic_pairs(example: dict, fmt, *, categories: Iterable[str], judge_options, provenance: dict,
                    max_pairs: int = 0) -> PromptOutcome:
    """Each category's perturbation of the reference, judged: kept when the judge names that category.

    A perturbation the judge files under another category is quarantined with the verdict: it means
    the perturbation or the judge is wrong, and the test suite requires there to be none.
    """
    outcome = PromptOutcome()
    chosen, source = reference_answer(example)
    check = judge(rendered_text(fmt, chosen), example, fmt, judge_options)
    if check.category != "ok":  # the data's own answer is wrong (glaive has some): no sound chosen
        outcome.quarantine.append({"example_id": example["id"], "source": example.get("source"),
                                   "row": example.get("row"), "reason": f"reference judged {check.category}: "
                                   f"{check.detail}"})
        return outcome
    rows = []
    categories = list(categories)
    _rng(example, "order").shuffle(categories)  # so that a per-prompt cap keeps every category as often
    for category in categories:
        perturbation = perturb(example, category, fmt)
        if perturbation is None:
            outcome.items.append((category, "not_applicable"))
            continue
        text = perturbation.text if perturbation.text is not None else rendered_text(fmt, perturbation.message)
        verdict = judge(text, example, fmt, judge_options)
        if verdict.category != category:
            outcome.items.append((category, "mismatch"))
            outcome.quarantine.append({"example_id": example["id"], "source": example.get("source"),
                                       "row": example.get("row"), "reason": f"synthetic {category} judged "
                                       f"{verdict.category}: {verdict.detail}", "text": text})
            continue
        prov = {**provenance, "sampling": {"perturbation": category}}
        rejected = clean_message(verdict.parsed) if category == "malformed_call" else perturbation.message
        rows.append((category, pair_row(example, chosen, rejected, category, source, prov)))
    keep_within_prompt(rows, outcome, max_pairs)
    return outcome
