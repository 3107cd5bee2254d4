"""The judge: one verdict per generated text, shared by evaluation and pair mining.

    verdict = judge(text, example, fmt, options)   # example: see docs/architecture.md
    verdict.category, verdict.detail, verdict.parsed, verdict.correction

Checks run in this order, each one only when the previous passed:

1. the text parses (`fmt.parse`) -> else `malformed_call` (even with prose around it: a broken call is
   the failure that matters);
2. call or no call as the reference -> `missed_call` / `unwanted_call`;
3. the number of calls -> `wrong_call_count`;
4. the functions called (as a multiset: parallel calls in any order) -> `wrong_function`;
5. the arguments, BFCL semantics, calls matched to expected calls by a proper assignment -> `wrong_arguments`;
6. a correct call with prose around it -> `text_around_call` (when `call_alone`);
7. a text answer with spacing errors -> `bad_spacing` (when `check_spacing`).

Arguments (BFCL): every required parameter present; no argument the expected call does not list;
the JSON type the tool's schema declares (an int passes for a number, a bool never for an int);
each value one of the acceptable values (in a BFCL answer key `""` among them means the argument may
be left out; in a reference call `""` is the empty string it says).
Strings compare by `options.strings`: exact | bfcl (case, spaces and `,./-_*^` folded, ' = ") |
loose (bfcl, and one may contain the other). Plain Python: no torch, no transformers.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from polaris_dpo.typography import find_issues, fix_spacing

__all__ = ["JudgeOptions", "Verdict", "expected_calls", "expected_message", "fix_spacing", "judge"]


@dataclass
class JudgeOptions:
    strings: str = "bfcl"  # exact | bfcl | loose
    check_types: bool = True
    check_spacing: bool = True
    call_alone: bool = True

    @classmethod
    def from_config(cls, judge_cfg) -> JudgeOptions:
        """From the `judge:` config section (a DictConfig, a dict or a JudgeConfig)."""
        if judge_cfg is None:
            return cls()
        get = judge_cfg.get if hasattr(judge_cfg, "get") else lambda key, default: getattr(judge_cfg, key, default)
        options = cls(**{key: get(key, getattr(cls, key)) for key in ("strings", "check_types", "check_spacing",
                                                                         "call_alone")})
        if options.strings not in ("exact", "bfcl", "loose"):
            raise ValueError(f"judge.strings={options.strings!r}: expected exact | bfcl | loose")
        return options


@dataclass
class Verdict:
    category: str
    detail: str
    parsed: dict
    correction: dict | None = None
    spacing_issues: list = field(default_factory=list)  # typography.Issue list when category is bad_spacing

    @property
    def ok(self) -> bool:
        return self.category == "ok"


_DEFAULT_OPTIONS = JudgeOptions()


def judge(text: str, example: dict, fmt, options: JudgeOptions | Any = None) -> Verdict:
    """The verdict on `text`, generated for `example` in format `fmt` (see the module docstring for the order)."""
    if options is None:
        options = _DEFAULT_OPTIONS
    elif not isinstance(options, JudgeOptions):
        options = JudgeOptions.from_config(options)
    parsed = fmt.parse(text)
    return judge_message(parsed, example, options)


def judge_message(parsed: dict, example: dict, options: JudgeOptions = _DEFAULT_OPTIONS) -> Verdict:
    """The verdict on an already parsed assistant message (what `judge` does after `fmt.parse`)."""
    error = parsed.get("parse_error")
    if error is not None:
        reason = getattr(error, "reason", str(error))
        fragment = getattr(error, "fragment", "")
        detail = f"call does not parse: {reason}" + (f" in {fragment[:80]!r}" if fragment else "")
        return Verdict("malformed_call", detail, parsed)
    got = parsed.get("tool_calls") or []
    content = parsed.get("content") or ""
    expected = expected_calls(example)
    if not expected:
        if got:
            names = ", ".join(repr(_name(call)) for call in got)
            kept = fix_spacing(content) if options.check_spacing else content
            return Verdict("unwanted_call", f"expected a text answer, got a call to {names}", parsed,
                           {"role": "assistant", "content": kept} if content.strip() else None)
        if options.check_spacing:
            issues = find_issues(content)
            if issues:
                detail = f"{len(issues)} spacing error(s): " + "; ".join(issue.describe() for issue in issues[:3])
                return Verdict("bad_spacing", detail, parsed,
                               {"role": "assistant", "content": fix_spacing(content, issues)}, issues)
        return Verdict("ok", "text answer", parsed)
    if not got:
        names = ", ".join(repr(call["name"]) for call in expected)
        return Verdict("missed_call", f"expected a call to {names}, got a text answer", parsed)
    if len(got) != len(expected):
        return Verdict("wrong_call_count", f"expected {len(expected)} call(s) "
                       f"({', '.join(c['name'] for c in expected)}), got {len(got)} "
                       f"({', '.join(_name(c) for c in got)})", parsed)
    got_names = sorted(_name(call) for call in got)
    expected_names = sorted(call["name"] for call in expected)
    if got_names != expected_names:
        missing = _multiset_minus(expected_names, got_names)
        extra = _multiset_minus(got_names, expected_names)
        return Verdict("wrong_function", f"expected {', '.join(map(repr, missing))}, got "
                       f"{', '.join(map(repr, extra))}", parsed)
    tools = {tool_name(tool): tool for tool in example.get("tools") or []}
    assignment, problems = _assign(got, expected, tools, options)
    if assignment is None:
        correction = _corrected_calls(parsed, got, expected, tools, options)
        return Verdict("wrong_arguments", problems, parsed, correction)
    if options.call_alone and content.strip():
        return Verdict("text_around_call", f"correct call with text around it: {content.strip()[:80]!r}", parsed,
                       {"role": "assistant", "content": None, "tool_calls": got})
    return Verdict("ok", "call matches" if len(got) == 1 else f"{len(got)} calls match", parsed)


# --- expected calls --------------------------------------------------------------------------------

def expected_calls(example: dict) -> list[dict]:
    """[{"name", "arguments": {arg: [acceptable values]}, "nested": bool}] for the example's expected answer.

    From BFCL acceptable values when the example has them (`nested`: dict values inside hold
    alternatives too), else from the reference message's calls (each value its own only alternative).
    """
    acceptable = example.get("acceptable")
    if acceptable:
        return [{"name": call["name"], "arguments": call.get("arguments") or {}, "nested": True}
                for call in acceptable]
    reference = example.get("reference") or {}
    calls = []
    for call in reference.get("tool_calls") or []:
        function = call.get("function", call)
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        calls.append({"name": function["name"], "arguments": {key: [value] for key, value in arguments.items()},
                      "nested": False})
    return calls


def expected_message(example: dict) -> dict | None:
    """The call answer the judge expects, as an assistant message (first acceptable values); None when
    the example wants text. It differs from the reference where the data answered a call in prose and
    kept the call as its answer key (`acceptable`)."""
    calls = []
    for call in expected_calls(example):
        arguments = {}
        for name, alternatives in call["arguments"].items():
            value = _first_value(_alts(alternatives), call["nested"])
            if value is not _OMIT:
                arguments[name] = value
        calls.append({"type": "function", "function": {"name": call["name"], "arguments": arguments}})
    return {"role": "assistant", "content": None, "tool_calls": calls} if calls else None


def tool_name(tool: dict) -> str:
    return (tool.get("function") or tool).get("name", "")


def _name(call: dict) -> str:
    return (call.get("function") or call).get("name", "")


def _arguments(call: dict) -> dict:
    arguments = (call.get("function") or call).get("arguments")
    return arguments if isinstance(arguments, dict) else {}


def _multiset_minus(a: list[str], b: list[str]) -> list[str]:
    rest = list(b)
    out = []
    for item in a:
        if item in rest:
            rest.remove(item)
        else:
            out.append(item)
    return out


# --- matching calls to expected calls ----------------------------------------------------------------

def _assign(got: list[dict], expected: list[dict], tools: dict, options: JudgeOptions):
    """A perfect matching of got calls to expected calls, or (None, the problem of the closest pairing)."""
    if len(got) == 1:
        problem = call_problem(got[0], expected[0], tools.get(expected[0]["name"]), options)
        return ([0], "") if problem is None else (None, problem)
    problems = [[call_problem(g, e, tools.get(e["name"]), options) if _name(g) == e["name"] else "name"
                 for e in expected] for g in got]
    match = _perfect_matching([[p is None for p in row] for row in problems])
    if match is not None:
        return match, ""
    # not matchable: report the first got call that has no correct partner, against its same-named expected call
    partial = _max_matching([[p is None for p in row] for row in problems])
    for g, row in enumerate(problems):
        if partial[g] is None:
            candidates = [p for p in row if p not in (None, "name")]
            prefix = f"call {g + 1} ({_name(got[g])}): " if len(got) > 1 else ""
            return None, prefix + (candidates[0] if candidates else "no matching expected call")
    return None, "calls do not match"


def _max_matching(ok: list[list[bool]]) -> list[int | None]:
    """Maximum bipartite matching (augmenting paths; n is the number of parallel calls, small)."""
    n_expected = len(ok[0]) if ok else 0
    owner: list[int | None] = [None] * n_expected

    def augment(g: int, seen: set) -> bool:
        for e in range(n_expected):
            if ok[g][e] and e not in seen:
                seen.add(e)
                if owner[e] is None or augment(owner[e], seen):
                    owner[e] = g
                    return True
        return False

    for g in range(len(ok)):
        augment(g, set())
    result: list[int | None] = [None] * len(ok)
    for e, g in enumerate(owner):
        if g is not None:
            result[g] = e
    return result


def _perfect_matching(ok: list[list[bool]]) -> list[int] | None:
    result = _max_matching(ok)
    return None if any(e is None for e in result) else result  # type: ignore[return-value]


# --- one call against one expected call ---------------------------------------------------------------

def _parameters(tool: dict | None) -> dict:
    if not tool:
        return {}
    return (tool.get("function") or tool).get("parameters") or {}


def call_problem(call: dict, expected: dict, tool: dict | None, options: JudgeOptions) -> str | None:
    """None when `call` satisfies `expected`, else what differs (the first problem found)."""
    arguments = _arguments(call)
    allowed = expected["arguments"]
    parameters = _parameters(tool)
    properties = parameters.get("properties") or {}
    for name in parameters.get("required") or ():
        # a required argument the answer key does not list is the key's call (BFCL data has a few)
        if name not in arguments and name in allowed and not _may_omit(expected, name):
            return f"argument {name!r}: required, missing"
    for name, value in arguments.items():
        if name not in allowed:
            return f"argument {name!r}: not expected, got {_show(value)}"
        if any(_value_ok(value, option, expected["nested"], options.strings) for option in allowed[name]):
            continue  # the answer key is the authority: a listed value passes whatever the declared type
        declared = (properties.get(name) or {}).get("type")
        if options.check_types and declared and not _type_ok(value, declared):
            return f"argument {name!r}: expected type {declared}, got {_show(value)}"
        if options.check_types or not any(_coerced_equal(value, option) for option in allowed[name]):
            return f"argument {name!r}: expected one of {_show(_present(expected, name))}, got {_show(value)}"
    for name in allowed:
        if name not in arguments and not _may_omit(expected, name):
            return f"argument {name!r}: missing, expected one of {_show(_present(expected, name))}"
    return None


def _may_omit(expected: dict, name: str) -> bool:
    """BFCL's answer keys list "" among an argument's values when it may be left out; a reference call's
    "" is just an empty string."""
    return expected["nested"] and "" in expected["arguments"].get(name, ())


def _present(expected: dict, name: str) -> list:
    """The values an argument may take (without BFCL's "may be left out" marker)."""
    values = expected["arguments"][name]
    return [value for value in values if value != ""] if expected["nested"] else values


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_TYPES = {
    "string": (str,), "integer": (int,), "number": (int, float), "float": (int, float),
    "boolean": (bool,), "array": (list, tuple), "tuple": (list, tuple), "object": (dict,), "dict": (dict,),
    "null": (type(None),),
}


def _type_ok(value: Any, declared: str | list) -> bool:
    if isinstance(declared, list):
        return any(_type_ok(value, one) for one in declared)
    accepted = _TYPES.get(declared)
    if accepted is None:
        return True  # a type we do not know (any, Java types): no check
    if isinstance(value, bool) and bool not in accepted:
        return False
    return isinstance(value, accepted)


_FOLD = re.compile(r"[ ,./\-_*^]")


def fold(text: str) -> str:
    """BFCL's string standardisation: spaces and `,./-_*^` removed, lower case, ' read as "."""
    return _FOLD.sub("", text).lower().replace("'", '"')


def strings_equal(got: str, want: str, mode: str) -> bool:
    if got == want:
        return True
    if mode == "exact":
        return False
    got_folded, want_folded = fold(got), fold(want)
    if got_folded == want_folded:
        return True
    return mode == "loose" and bool(want_folded) and bool(got_folded) and (
        want_folded in got_folded or got_folded in want_folded)


def _value_ok(got: Any, want: Any, nested: bool, mode: str) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and strings_equal(got, want, mode)
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and got == want
    if isinstance(want, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(got) == len(want)
                and all(_value_ok(g, w, nested, mode) for g, w in zip(got, want, strict=True)))
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False
        if not nested:
            return got.keys() == want.keys() and all(_value_ok(got[k], want[k], False, mode) for k in want)
        # BFCL: a dict's values are lists of alternatives, "" meaning the key may be left out
        for key, value in got.items():
            alternatives = want.get(key)
            if alternatives is None or not any(_value_ok(value, alt, True, mode) for alt in _alts(alternatives)):
                return False
        return all(key in got or "" in _alts(alternatives) for key, alternatives in want.items())
    if want is None:
        return got is None
    return got == want


def _coerced_equal(got: Any, want: Any) -> bool:
    """With check_types off: a scalar written as another JSON type equals the scalar ("3" == 3, "2.0" == 2,
    "true" == True, 3 == "3"); a different number never does."""
    scalar = _as_scalar(got)
    return scalar is not None and scalar == _as_scalar(want)


def _as_scalar(value: Any) -> tuple | None:
    """("bool", b) or ("number", x) for a bool or number, or a string spelling one; else None."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in ("true", "false"):
        return ("bool", text == "true")
    try:
        number = float(text)
    except ValueError:
        return None
    return ("number", number) if number == number and abs(number) != float("inf") else None


def _alts(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# --- corrections ------------------------------------------------------------------------------------

def _corrected_calls(parsed: dict, got: list[dict], expected: list[dict], tools: dict,
                     options: JudgeOptions) -> dict | None:
    """The model's own calls with wrong argument values replaced by acceptable ones (same order, same names)."""
    pairing = _closest_pairing(got, expected, options)
    if pairing is None:
        return None
    calls = []
    for call, best in zip(got, pairing, strict=True):
        fixed = _fix_arguments(_arguments(call), expected[best], tools.get(expected[best]["name"]), options)
        if fixed is None:
            return None
        corrected = dict(call)
        corrected["function"] = {**(call.get("function") or {}), "name": _name(call), "arguments": fixed}
        calls.append(corrected)
    return {"role": "assistant", "content": None, "tool_calls": calls}


MAX_PERMUTED_CALLS = 7  # beyond this many parallel calls, pair them greedily (7! orders at most)


def _closest_pairing(got: list[dict], expected: list[dict], options: JudgeOptions) -> list[int] | None:
    """For each got call, the same-named expected call it is corrected towards: the pairing that keeps the
    most of the model's own argument values, so that the correction changes the fewest (None: no pairing)."""
    agreement = [[_agreement(call, e, options) if _name(call) == e["name"] else None for e in expected]
                 for call in got]
    if len(got) <= MAX_PERMUTED_CALLS:
        best, best_score = None, -1
        for order in itertools.permutations(range(len(expected)), len(got)):
            scores = [agreement[g][e] for g, e in enumerate(order)]
            if None not in scores and sum(scores) > best_score:
                best, best_score = list(order), sum(scores)
        return best
    remaining, pairing = list(range(len(expected))), []
    for row in agreement:
        candidates = [e for e in remaining if row[e] is not None]
        if not candidates:
            return None
        pairing.append(max(candidates, key=lambda e: row[e]))
        remaining.remove(pairing[-1])
    return pairing


def _agreement(call: dict, expected: dict, options: JudgeOptions) -> int:
    arguments = _arguments(call)
    return sum(1 for name, alternatives in expected["arguments"].items()
               if name in arguments and any(_value_ok(arguments[name], alt, expected["nested"], options.strings)
                                            for alt in alternatives))


def _fix_arguments(arguments: dict, expected: dict, tool: dict | None, options: JudgeOptions) -> dict | None:
    fixed = {}
    for name, value in arguments.items():
        alternatives = expected["arguments"].get(name)
        if alternatives is None:
            continue  # not allowed: dropped
        if any(_value_ok(value, alt, expected["nested"], options.strings) for alt in alternatives):
            fixed[name] = value
        else:
            replacement = _first_value(alternatives, expected["nested"])
            if replacement is _OMIT:
                continue
            fixed[name] = replacement
    for name, alternatives in expected["arguments"].items():
        if name not in fixed and name not in arguments and not _may_omit(expected, name):
            replacement = _first_value(alternatives, expected["nested"])
            if replacement is _OMIT:
                return None
            fixed[name] = replacement
    return fixed


_OMIT = object()


def _first_value(alternatives: list, nested: bool) -> Any:
    for alternative in alternatives:
        if nested and alternative == "":
            continue
        return _collapse(alternative) if nested else alternative
    return _OMIT


def _collapse(value: Any) -> Any:
    """A concrete value from a BFCL acceptable value (nested dicts hold lists of alternatives)."""
    if isinstance(value, list):
        return [_collapse(item) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, alternatives in value.items():
            first = _first_value(_alts(alternatives), True)
            if first is not _OMIT:
                out[key] = first
        return out
    return value
