"""Verdicts -> chosen/rejected pairs; synthetic perturbation of references; pair sets on disk.

A pair row (docs/architecture.md): `prompt`, `chosen`, `rejected` (messages, storage form), `tools`
(JSON string), `category`, `chosen_source`, and provenance (`source`, `source_row`, `example_id`,
`model`, `sampling`, `seed`).

Per prompt, `mined_pairs` (the model's samples), `synthetic_pairs` (each reference perturbed into
each category) and `preference_pairs` (When2Call) return a `PromptOutcome`: candidate pairs, an
optional counterweight candidate, and one ledger entry per sample or perturbation, so that the
counts add up. `PairSetWriter` writes a pair set folder atomically; `load` reads one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from polaris_dpo import messages as msgs
from polaris_dpo.atomic import atomic_write_json, atomic_write_text
from polaris_dpo.config import FAILURE_CATEGORIES
from polaris_dpo.judge import expected_calls, expected_message, fix_spacing, judge
from polaris_dpo.typography import find_issues

# Chosen answer for a prompt no function fits when the data gives no text (BFCL irrelevance).
NO_FITTING_FUNCTION = "None of the available functions can do that, so I cannot help with this request."
TEXT_AROUND = "Sure, let me take care of that for you."
CHOSEN_SOURCES = ("corrected", "reference", "own", "synthetic", "dataset")


# ---------------------------------------------------------------- messages and rows

def assistant(content: str | None = None, tool_calls: list[dict] | None = None) -> dict:
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def clean_message(message: dict) -> dict:
    """An assistant message as a pair stores it: content and calls only (no parse_error, no ids)."""
    calls = [{"type": "function", "function": {"name": c["function"]["name"],
                                               "arguments": c["function"].get("arguments") or {}}}
             for c in message.get("tool_calls") or []]
    return assistant(message.get("content"), calls)


def is_call(message: dict) -> bool:
    return bool(message.get("tool_calls"))


def reference_answer(example: dict) -> tuple[dict, str]:
    """(chosen message, chosen_source) from the answer key: the expected calls alone (no prose around
    them), else the reference text spacing-fixed, else a stock text answer."""
    reference = example["reference"]
    if is_call(reference):
        return assistant(None, clean_message(reference)["tool_calls"]), "reference"
    expected = expected_message(example)
    if expected is not None:  # the data answered in prose and kept the call as its answer key
        return expected, "reference"
    text = reference.get("content")
    if text and text.strip():
        return assistant(fix_spacing(text)), "reference"
    return assistant(NO_FITTING_FUNCTION), "synthetic"


def stored_prompt(example: dict) -> dict:
    """The prompt side of every pair of `example`, in storage form (computed once per prompt)."""
    return {"prompt": msgs.to_storage(example["prompt"]),
            "tools": json.dumps(example.get("tools") or [], ensure_ascii=False)}


def pair_row(example: dict, chosen: dict, rejected: dict, category: str, chosen_source: str,
             provenance: dict, stored: dict | None = None) -> dict:
    stored = stored or stored_prompt(example)
    return {"prompt": stored["prompt"], "chosen": msgs.to_storage([clean_message(chosen)]),
            "rejected": msgs.to_storage([clean_message(rejected)]), "tools": stored["tools"],
            "category": category, "chosen_source": chosen_source,
            "source": str(example.get("source") or ""), "source_row": int(example.get("row") or 0),
            "example_id": str(example["id"]), "model": str(provenance.get("model", "")),
            "sampling": json.dumps(provenance.get("sampling") or {}, sort_keys=True),
            "seed": int(provenance.get("seed", 0))}


def pair_key(row: dict) -> str:
    """Identity of a pair for exact-duplicate removal."""
    body = json.dumps([row["prompt"], row["chosen"], row["rejected"], row["tools"]], sort_keys=True)
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


def prompt_key(row_or_example: dict) -> str:
    """Identity of a prompt (its messages and tools): the unit of the train/test split."""
    prompt, tools = row_or_example["prompt"], row_or_example.get("tools") or []
    if not isinstance(tools, str):
        tools = json.dumps(tools, sort_keys=True, ensure_ascii=False)
    body = json.dumps([msgs.to_storage(prompt) if prompt and isinstance(prompt[0], dict) else prompt, tools],
                      sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


def is_test_prompt(row: dict, test_fraction: float, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{prompt_key(row)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < test_fraction


# ---------------------------------------------------------------- one prompt's outcome

@dataclass
class PromptOutcome:
    """What one prompt gave: candidate pairs, a counterweight candidate, and the ledger of its items."""

    pairs: list[dict] = field(default_factory=list)
    counterweight: dict | None = None
    items: list[tuple[str, str]] = field(default_factory=list)  # (category, outcome) per sample / perturbation
    quarantine: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.pairs:
            return "failed"
        return "quarantined" if self.quarantine and not self.items else "clean"


def _keep_within_prompt(candidates: list[tuple[str, dict]], outcome: PromptOutcome, max_pairs: int) -> None:
    """Per prompt: drop exact duplicates, then keep at most `max_pairs`, one per category before repeats."""
    seen, unique = set(), []
    for category, row in candidates:  # one prompt: chosen and rejected tell its pairs apart
        key = json.dumps([row["chosen"], row["rejected"]], sort_keys=True)
        if key in seen:
            outcome.items.append((category, "duplicate"))
        else:
            seen.add(key)
            unique.append((category, row))
    firsts, repeats, categories = [], [], set()
    for category, row in unique:
        (repeats if category in categories else firsts).append((category, row))
        categories.add(category)
    ordered = firsts + repeats
    for rank, (category, row) in enumerate(ordered):
        if max_pairs > 0 and rank >= max_pairs:
            outcome.items.append((category, "per_prompt_cap"))
        else:
            outcome.items.append((category, "pair"))
            outcome.pairs.append(row)


def mined_pairs(example: dict, samples: list[str], verdicts: list, *, categories: Iterable[str],
                max_pairs: int, provenance: list[dict], counterweight: bool = True) -> PromptOutcome:
    """Pairs from the model's samples: chosen = its own output corrected, else the reference; rejected = the sample.

    `provenance[j]` describes sample j (model, sampling, seed). With `counterweight`, a prompt whose
    reference answers in text also offers one counterweight candidate (an unneeded call as rejected):
    the model's own unwanted call when it made one, else a synthetic one.
    """
    wanted = set(categories)
    outcome = PromptOutcome()
    candidates, own_ok = [], None
    for verdict, prov in zip(verdicts, provenance, strict=True):
        if verdict.category == "ok":
            outcome.items.append(("ok", "ok"))
            if is_call(verdict.parsed) or (verdict.parsed.get("content") or "").strip():
                own_ok = own_ok or verdict.parsed  # an empty turn passes BFCL's irrelevance check but is no answer
            continue
        if verdict.category not in wanted:
            outcome.items.append((verdict.category, "category_off"))
            continue
        candidates.append((verdict, prov))
    wants_counterweight = counterweight and not expected_calls(example) and bool(example.get("tools"))
    if not candidates and not wants_counterweight:
        return outcome
    stored = stored_prompt(example)
    reference, reference_source = reference_answer(example)
    if reference_source == "synthetic" and own_ok is not None:
        reference, reference_source = own_ok, "own"  # no reference text: the model's own right answer
    rows = []
    for verdict, prov in candidates:
        chosen, source = ((verdict.correction, "corrected") if verdict.correction is not None
                          else (reference, reference_source))
        rows.append((verdict.category, pair_row(example, chosen, verdict.parsed, verdict.category, source, prov,
                                                stored)))
    _keep_within_prompt(rows, outcome, max_pairs)
    if wants_counterweight:
        own_calls = [(v, p) for v, p in zip(verdicts, provenance, strict=True) if v.category == "unwanted_call"]
        if own_calls:
            verdict, prov = own_calls[0]
            outcome.counterweight = pair_row(example, reference, verdict.parsed, "unwanted_call", reference_source,
                                             prov, stored)
        else:
            rejected = perturb(example, "unwanted_call")
            if rejected is not None:
                prov = {**provenance[0], "model": "synthetic", "sampling": {"perturbation": "unwanted_call"}}
                outcome.counterweight = pair_row(example, reference, rejected.message, "unwanted_call",
                                                 reference_source, prov, stored)
    return outcome


# ---------------------------------------------------------------- synthetic perturbation

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
    import re

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
    _keep_within_prompt(rows, outcome, max_pairs)
    return outcome


# ---------------------------------------------------------------- preference data (When2Call)

def preference_pairs(example: dict, provenance: dict, judge_options=None) -> PromptOutcome:
    """One pair per rejected candidate of a labelled preference row: chosen = the right answer.

    The category is the judge's verdict on the rejected answer against the chosen one (a call where
    text was right is unwanted_call, and so on). A rejected text answer against a chosen text answer
    (When2Call's direct answer vs asking back) fits no failure category: counted as `judged_alike`,
    not paired. Rows without a chosen and a rejected answer are quarantined.
    """
    outcome = PromptOutcome()
    prefs = example.get("preferences") or {}
    chosen = prefs.get("chosen")
    rejected = prefs.get("rejected") or []
    if not chosen or not rejected:
        outcome.quarantine.append({"example_id": example["id"], "source": example.get("source"),
                                   "row": example.get("row"), "reason": "preferences: no chosen or no rejected answer"})
        return outcome
    chosen = msgs.normalize_message(chosen, "preferences.chosen")
    target = {**example, "reference": chosen, "acceptable": None}
    from polaris_dpo.judge import judge_message

    rows = []
    for i, message in enumerate(rejected):
        message = msgs.normalize_message(message, f"preferences.rejected[{i}]")
        verdict = judge_message(message, target, judge_options) if judge_options else judge_message(message, target)
        category = verdict.category
        if category == "ok":  # text against text (a direct answer where asking back was right): no category
            outcome.items.append(("ok", "judged_alike"))
            continue
        label = (prefs.get("rejected_kinds") or [None] * len(rejected))[i]
        prov = {**provenance, "sampling": {"dataset_label": label} if label else {}}
        rows.append((category, pair_row(example, chosen, message, category, "dataset", prov)))
    _keep_within_prompt(rows, outcome, 0)
    return outcome


# ---------------------------------------------------------------- the ledger

def new_ledger() -> dict:
    return {"prompts": {"read": 0, "failed": 0, "clean": 0, "quarantined": 0},
            "items": {}, "counterweight": {"candidates": 0, "added": 0}}


def record(ledger: dict, outcome: PromptOutcome) -> None:
    ledger["prompts"]["read"] += 1
    ledger["prompts"][outcome.status] += 1
    for category, result in outcome.items:
        by = ledger["items"].setdefault(category, {})
        by[result] = by.get(result, 0) + 1
    if outcome.counterweight is not None:
        ledger["counterweight"]["candidates"] += 1


def move(ledger: dict, category: str, from_outcome: str, to_outcome: str) -> None:
    by = ledger["items"].setdefault(category, {})
    by[from_outcome] = by.get(from_outcome, 0) - 1
    by[to_outcome] = by.get(to_outcome, 0) + 1


def check_ledger(ledger: dict, pairs_by_category: dict[str, int]) -> list[str]:
    """Where the counts do not add up (empty when they do)."""
    problems = []
    p = ledger["prompts"]
    if p["read"] != p["failed"] + p["clean"] + p["quarantined"]:
        problems.append(f"prompts: read {p['read']} != failed {p['failed']} + clean {p['clean']} "
                        f"+ quarantined {p['quarantined']}")
    for category in set(pairs_by_category) | set(ledger["items"]):
        kept = ledger["items"].get(category, {}).get("pair", 0)
        extra = ledger["counterweight"]["added"] if category == "unwanted_call" else 0
        if pairs_by_category.get(category, 0) != kept + extra:
            problems.append(f"{category}: {pairs_by_category.get(category, 0)} pairs written, ledger says "
                            f"{kept} + {extra} counterweight")
    return problems


def format_ledger(ledger: dict) -> str:
    p = ledger["prompts"]
    lines = [f"prompts read {p['read']} = failed {p['failed']} + clean {p['clean']} + quarantined {p['quarantined']}"]
    for category in sorted(ledger["items"]):
        by = ledger["items"][category]
        parts = " + ".join(f"{name} {n}" for name, n in sorted(by.items()) if n)
        lines.append(f"  {category}: {sum(by.values())} = {parts}")
    cw = ledger["counterweight"]
    lines.append(f"  counterweight: {cw['added']} added of {cw['candidates']} candidates")
    return "\n".join(lines)


# ---------------------------------------------------------------- pair sets on disk

class PairSetWriter:
    """Builds `pairs/<name>/` in a temporary folder beside it; `commit` swaps it in, an error leaves no trace."""

    def __init__(self, target: str | Path, examples_per_category: int = 2):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        self.files = {split: open(self.staging / f"{split}.jsonl", "w", encoding="utf-8") for split in ("train", "test")}
        self.counts: dict[str, Counter] = {"train": Counter(), "test": Counter()}
        self.chosen_sources: Counter = Counter()
        self.sources: Counter = Counter()
        self.examples: dict[str, list[dict]] = defaultdict(list)
        self.examples_per_category = examples_per_category

    def add(self, row: dict, split: str) -> None:
        self.files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
        self.counts[split][row["category"]] += 1
        self.chosen_sources[row["chosen_source"]] += 1
        self.sources[row["source"]] += 1
        if len(self.examples[row["category"]]) < self.examples_per_category:
            self.examples[row["category"]].append(row)

    def by_category(self) -> dict[str, int]:
        return dict(self.counts["train"] + self.counts["test"])

    def commit(self, stats: dict, info: dict) -> Path:
        for f in self.files.values():
            f.close()
        stats = {**stats, "pairs": {split: dict(c) for split, c in self.counts.items()},
                 "chosen_sources": dict(self.chosen_sources), "prompt_sources": dict(self.sources)}
        atomic_write_json(self.staging / "stats.json", stats, sort_keys=True)
        atomic_write_text(self.staging / "README.md", card(self.target.name, stats, info, self.examples))
        write_chart(self.staging / "categories.png", self.counts, self.target.name)
        self.staging.chmod(0o755)  # mkdtemp makes it private; a pair set is shared like any folder
        backup = None
        if self.target.exists():
            backup = self.target.with_name(f".{self.target.name}.old-{self.staging.name[-8:]}")
            self.target.rename(backup)
        self.staging.rename(self.target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return self.target

    def abort(self) -> None:
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def write_chart(path: Path, counts: dict[str, Counter], title: str) -> None:
    """Bar chart of pairs per category, train and test stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = [c for c in FAILURE_CATEGORIES if counts["train"][c] or counts["test"][c]] or FAILURE_CATEGORIES
    train = [counts["train"][c] for c in categories]
    test = [counts["test"][c] for c in categories]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.barh(categories, train, label="train", color="#4C72B0")
    ax.barh(categories, test, left=train, label="test", color="#DD8452")
    ax.invert_yaxis()
    ax.set_xlabel("pairs")
    ax.set_title(f"pairs/{title}: pairs per category")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _show_message(message: dict) -> str:
    if message.get("tool_calls"):
        calls = "; ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in message["tool_calls"])
        return (f"{message['content']!r} + " if message.get("content") else "") + f"call {calls}"
    return repr(message.get("content"))


def card(name: str, stats: dict, info: dict, examples: dict[str, list[dict]]) -> str:
    """The pair set's README: counts, where the prompts came from, model and sampling, config, examples."""
    counts = stats["pairs"]
    lines = [f"# Pair set `{name}`", "", info.get("summary", ""), "",
             "Load it with `datasets.load_dataset(\"json\", data_dir=\"pairs/" + name + "\")` or "
             "`polaris_dpo.pairs.load(path)`; stage dpo reads it with `dpo.pairs=pairs/" + name + "`.", "",
             "## Pairs per category", "", "| category | train | test |", "|---|---:|---:|"]
    for category in FAILURE_CATEGORIES:
        train, test = counts["train"].get(category, 0), counts["test"].get(category, 0)
        if train or test:
            lines.append(f"| `{category}` | {train} | {test} |")
    lines.append(f"| **all** | {sum(counts['train'].values())} | {sum(counts['test'].values())} |")
    lines += ["", "![pairs per category](categories.png)", "", "## Counts", "", "```",
              format_ledger(stats["ledger"]), "```", "",
              "Chosen answers: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["chosen_sources"].items())), "",
              "## Where the prompts came from", ""]
    lines += [f"- `{source}`: {n} pairs" for source, n in sorted(stats["prompt_sources"].items())]
    lines += [f"- data: `{info.get('data', '')}`", "", "## Model and sampling", "",
              f"- source: `{info.get('source', '')}`", f"- model: `{info.get('model', '')}`",
              f"- sampling: `{json.dumps(info.get('sampling', {}), sort_keys=True)}`",
              f"- seed: {info.get('seed', '')}", "", "## Examples", ""]
    for category in FAILURE_CATEGORIES:
        for row in examples.get(category, []):
            prompt = msgs.from_storage(row["prompt"])
            last_user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
            chosen = msgs.from_storage(row["chosen"])[0]
            rejected = msgs.from_storage(row["rejected"])[0]
            lines += [f"**{category}** ({row['source']} row {row['source_row']})", "",
                      f"- user: {str(last_user)[:200]!r}", f"- chosen ({row['chosen_source']}): "
                      f"{_show_message(chosen)[:300]}", f"- rejected: {_show_message(rejected)[:300]}", ""]
    lines += ["## Config", "", "```yaml", info.get("config", "").rstrip(), "```", ""]
    return "\n".join(lines)


def load(path: str | Path):
    """The pair set as a `datasets.DatasetDict` (train, test)."""
    import datasets

    path = Path(path)
    files = {split: str(path / f"{split}.jsonl") for split in ("train", "test")
             if (path / f"{split}.jsonl").is_file() and (path / f"{split}.jsonl").stat().st_size > 0}
    if "train" not in files:
        raise FileNotFoundError(f"{path}: no pair set here (train.jsonl missing or empty)")
    return datasets.load_dataset("json", data_files=files)
