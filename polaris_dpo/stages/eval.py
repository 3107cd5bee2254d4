"""stage eval: judge samples of a model (or a file of predictions) on held-out prompts.

    python -m polaris_dpo stage=eval [eval.model_path=DIR] [eval.predictions=FILE] [eval.compare_to=DIR]

1. read the configured data; the held-out conversations (`data.eval_fraction`), cut into examples;
2. texts: `eval.predictions` (JSONL of {"id", "text"}, matched by example id, or by conversation id
   where a conversation has one example, e.g. BFCL; rows that cannot be used go to the run's quarantine
   file, as unusable data rows do; no model, no torch) or `eval.samples_per_prompt` samples at
   `eval.temperature` from `eval.model_path` (adapter or model) or the base model;
3. judge every text; write metrics.json, verdicts.jsonl, report.md, categories.png; log to wandb. Failed
   samples that are calls in another format's syntax get one warning naming that format.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

from polaris_dpo import formats, messages, readers, report, tracking, training
from polaris_dpo.atomic import atomic_write_json, atomic_write_jsonl, atomic_write_text
from polaris_dpo.config import CATEGORIES, FAILURE_CATEGORIES
from polaris_dpo.judge import JudgeOptions, expected_calls, judge

log = logging.getLogger(__name__)


def check_config(e) -> None:
    """Value ranges of the eval section, checked before anything is read or loaded."""
    for key in ("samples_per_prompt", "max_new_tokens", "batch_size"):
        if e[key] < 1:
            raise ValueError(f"eval.{key}={e[key]}: at least 1")
    if e.max_prompts is not None and e.max_prompts < 1:
        raise ValueError(f"eval.max_prompts={e.max_prompts}: at least 1, or null for every held-out prompt")
    if e.temperature < 0:
        raise ValueError(f"eval.temperature={e.temperature}: at least 0 (0: greedy)")
    if not 0.0 < e.top_p <= 1.0:
        raise ValueError(f"eval.top_p={e.top_p}: in (0, 1]")


def run(cfg, output_dir: str | Path | None = None, model_path: str | None = None) -> dict:
    """Evaluate; `output_dir` defaults to the run directory, `model_path` to `eval.model_path`."""
    check_config(cfg.eval)
    out = Path(output_dir or cfg.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmt = training.load_format(cfg, model_path or cfg.eval.model_path)  # the format the model was trained with
    options = JudgeOptions.from_config(cfg.judge)
    if cfg.eval.predictions:
        examples = load_examples(cfg, out, held_out_only=False)
        quarantine = out / (cfg.data.get("quarantine") or "quarantine.jsonl")
        samples, unmatched, counts = read_predictions(cfg.eval.predictions, examples, quarantine)
        settings = {"predictions": str(cfg.eval.predictions)}
    else:
        examples = load_examples(cfg, out, held_out_only=True)
        samples = sample_model(cfg, fmt, examples, model_path or cfg.eval.model_path)
        unmatched, counts = [], None
        settings = {"model": str(model_path or cfg.eval.model_path or cfg.model.name_or_path),
                    "samples_per_prompt": 1 if cfg.eval.temperature <= 0 else cfg.eval.samples_per_prompt,
                    "temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "seed": cfg.seed}
    verdicts = judge_samples(samples, fmt, options)
    warn_other_call_syntax(verdicts, fmt)
    metrics = compute_metrics(verdicts)
    metrics.update(settings=settings, prompts=len({v["id"] for v in verdicts}),
                   unmatched_predictions=len(unmatched),
                   examples_without_prediction=len(examples) - len({v["id"] for v in verdicts}))
    if counts is not None:
        metrics["predictions"] = counts
        if metrics["examples_without_prediction"]:
            log.warning("eval: %d of %d example(s) have no prediction in %s and are not scored",
                        metrics["examples_without_prediction"], len(examples), cfg.eval.predictions)
    before = load_previous(cfg.eval.compare_to) if cfg.eval.compare_to else None
    paths = write_outputs(out, metrics, verdicts, before, cfg.eval.worst_examples)
    tracking.log_metrics(cfg, flat_metrics(metrics), "eval")
    log.info("eval: %d samples, ok %.1f%%, written to %s", metrics["n"],
             100 * metrics["categories"]["ok"]["rate"], out)
    return {**paths, "metrics": metrics}


# --- inputs -----------------------------------------------------------------------------------------

def load_examples(cfg, out: Path, held_out_only: bool) -> list[dict]:
    conversations, counts = readers.read_all(cfg.data, out)
    if held_out_only:
        _, conversations = readers.split(conversations, cfg.data.eval_fraction, cfg.data.split_seed)
    examples = [example for conversation in conversations for example in messages.examples(conversation)]
    if held_out_only and cfg.eval.max_prompts:
        examples = examples[:cfg.eval.max_prompts]
    if not examples:
        raise ValueError(f"eval: no examples in data {cfg.data.path or cfg.data.reader!r} "
                         f"(read {counts}; data.eval_fraction={cfg.data.eval_fraction})")
    return examples


def read_predictions(path: str, examples: list[dict], quarantine: Path | None = None) \
        -> tuple[list[tuple[dict, str]], list[str], dict]:
    """[(example, text)] in file order, the ids of predictions that match no example, and the counts.

    An id is an example id (`conv#turn`) or a conversation id whose conversation has one example. Several
    samples of one prompt carry distinct `sample` values (as verdicts.jsonl does). A row that cannot be used
    (not JSON, no id or text, an id and sample read before, an id that matches no example) is appended to
    `quarantine` with its file, line and reason, as the readers do; counts: read == used + quarantined.
    """
    by_id = _prediction_ids(examples)
    samples, unmatched, rejected = [], [], []
    first_line: dict[tuple, int] = {}  # (example id, sample) -> line where it was read
    read = 0
    for line_number, row, problem in _prediction_rows(path):
        read += 1
        if problem is None:
            example = by_id.get(str(row["id"]))
            key = (example["id"], str(row.get("sample"))) if example else None
            if example is None:
                unmatched.append(str(row["id"]))
                problem = ("id", f"id {row['id']!r} matches no example")
            elif key in first_line:
                what = f"id {row['id']!r}" + (f" sample {row['sample']!r}" if "sample" in row else "")
                problem = ("id", f"duplicate {what}: already read at line {first_line[key]}")
            else:
                first_line[key] = line_number
                samples.append((example, row["text"]))
        if problem is not None:
            rejected.append({"file": str(path), "row": line_number - 1, "line": line_number,
                             "field": problem[0], "reason": problem[1]})
    _append_quarantine(quarantine, rejected)
    counts = {"read": read, "used": len(samples), "quarantined": len(rejected)}
    if unmatched:
        log.warning("eval: %d prediction(s) match no example, e.g. %s", len(unmatched), unmatched[:3])
    where = f" (quarantine: {quarantine})" if quarantine is not None and rejected else ""
    log.log(logging.WARNING if rejected else logging.INFO, "eval.predictions=%s: read %d, used %d, "
            "quarantined %d%s", path, read, len(samples), len(rejected), where)
    if not samples:
        raise _no_predictions(path, read, rejected, quarantine, examples[0]["id"])
    return samples, unmatched, counts


def _no_predictions(path: str, read: int, rejected: list[dict], quarantine: Path | None,
                    example_id: str) -> ValueError:
    """The error of a predictions file none of whose rows can be used: the first reason, where all are."""
    expected = f'rows are {{"id": ..., "text": ...}}; example ids look like {example_id!r}'
    if not rejected:
        return ValueError(f"eval.predictions: {path} holds no predictions ({expected})")
    first = rejected[0]
    reason = first["reason"] if first["field"] == "row" else \
        f"line {first['line']}, {first['field']}: {first['reason']}"
    where = f"; every row's reason is in {quarantine}" if quarantine is not None else ""
    return ValueError(f"eval.predictions: none of the {read} row(s) of {path} can be used "
                      f"({reason}{where}; {expected})")


def _prediction_ids(examples: list[dict]) -> dict[str, dict]:
    """Example by id: its own id, and its conversation's id where the conversation has one example."""
    by_id = {example["id"]: example for example in examples}
    per_conversation = Counter(example["conversation_id"] for example in examples)
    for example in examples:
        if per_conversation[example["conversation_id"]] == 1:
            by_id.setdefault(example["conversation_id"], example)
    return by_id


def _prediction_rows(path: str):
    """(line number, row, problem) for each non-blank line: problem is (field, reason) for a row that is
    not a JSON object with an `id` and a string `text`, else None."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"eval.predictions: {path} is not a file")
    with open(path, encoding="utf-8-sig") as handle:
        try:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    reason = f"line {line_number} is not valid JSON ({err.msg} at column {err.colno})"
                    yield line_number, None, ("row", reason)
                    continue
                except (ValueError, RecursionError) as err:
                    yield line_number, None, ("row", f"line {line_number} is not usable JSON ({err})")
                    continue
                if not isinstance(row, dict):
                    yield line_number, None, ("row", f"line {line_number} is a JSON {type(row).__name__}, "
                                                     "not an object")
                elif row.get("id") is None:
                    yield line_number, row, ("id", "missing required field")
                elif row.get("text") is None:
                    yield line_number, row, ("text", "missing required field")
                elif not isinstance(row["text"], str):
                    yield line_number, row, ("text", f"must be a string, got {type(row['text']).__name__}")
                else:
                    yield line_number, row, None
        except UnicodeDecodeError as err:
            raise ValueError(f"eval.predictions: {path} is not UTF-8 text "
                             f"({err.reason} at byte {err.start})") from None


def _append_quarantine(path: Path | None, rows: list[dict]) -> None:
    """Add `rows` to the run's quarantine file (the readers' rows, if any, stay first)."""
    if path is None or not rows:
        return
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_jsonl(path, rows, before)


def sample_model(cfg, fmt, examples: list[dict], model_path: str | None) -> list[tuple[dict, str]]:
    from polaris_dpo import models, sample

    if model_path:
        model, tokenizer = models.load_trained(str(model_path), cfg, fmt, merge_adapter=True)  # merged: faster sampling
    else:
        base = models.model_path_for(cfg, fmt)
        tokenizer = models.load_tokenizer(base, fmt, cfg.model.revision, cfg.model.trust_remote_code)
        model = models.load_model(base, cfg.model, cfg.hardware, tokenizer)
    if cfg.hardware.device != "cpu" and not cfg.model.load_in_4bit:
        model.to(cfg.hardware.device)
    n = 1 if cfg.eval.temperature <= 0 else cfg.eval.samples_per_prompt
    progress = sample.progress_bar(total=len(examples) * n, desc="eval sampling")
    samples = []
    try:
        completions = sample.generate(model, tokenizer, fmt, examples, n=n, temperature=cfg.eval.temperature,
                                      top_p=cfg.eval.top_p, max_new_tokens=cfg.eval.max_new_tokens,
                                      batch_size=cfg.eval.batch_size, seed=cfg.seed, progress=progress)
        for example, texts in zip(examples, completions, strict=True):
            samples.extend((example, text) for text in texts)
    finally:
        progress.close()
    return samples


# --- judging and metrics ------------------------------------------------------------------------------

def judge_samples(samples: list[tuple[dict, str]], fmt, options: JudgeOptions) -> list[dict]:
    rows = []
    sample_index: Counter = Counter()
    for example, text in samples:
        verdict = judge(text, example, fmt, options)
        rows.append({"id": example["id"], "sample": sample_index[example["id"]], "category": verdict.category,
                     "detail": verdict.detail, "source": example.get("source") or "unknown",
                     "position": example.get("position") or "unknown",
                     "expects_call": bool(expected_calls(example)), "text": text})
        sample_index[example["id"]] += 1
    return rows


# Call syntaxes a failed sample is tried in: (name for the hint, overrides that choose it, format, options).
CALL_SYNTAXES = (
    ("polaris", "format=polaris", "polaris", {}),
    ("functionary", "format=functionary", "functionary", {"version": "v2"}),
    ("functionary v1", "format=functionary format.version=v1", "functionary", {"version": "v1"}),
    ("chatml_tools", "format=chatml_tools", "chatml_tools", {}),
    ("openchat", "format=openchat", "openchat", {}),
    ("vicuna", "format=vicuna", "vicuna", {}),
    ("native (hermes)", "format=native", "native", {"call_syntax": "hermes"}),
    ("native (mistral)", "format=native format.call_syntax=mistral", "native", {"call_syntax": "mistral"}),
)


def other_call_syntaxes(rows: list[dict], fmt) -> Counter:
    """How many missed_call / malformed_call samples parse as calls in another format's syntax, by syntax."""
    failed = [row for row in rows if row["category"] in ("missed_call", "malformed_call")]
    others = [(label, choice, formats.get(name, **options)) for label, choice, name, options in CALL_SYNTAXES
              if failed and not _same_syntax(fmt, name, options)]
    found: Counter = Counter()
    for row in failed:
        for label, choice, other in others:
            parsed = other.parse(row["text"])
            if parsed.get("tool_calls") and "parse_error" not in parsed:
                found[(label, choice)] += 1
    return found


def _same_syntax(fmt, name: str, options: dict) -> bool:
    """Whether `fmt` writes calls as format `name` with `options` does."""
    return fmt.name == name and all(getattr(fmt, key, None) == value for key, value in options.items())


def warn_other_call_syntax(rows: list[dict], fmt) -> None:
    """One warning when failed samples are calls in another format's syntax: the format is likely mis-set."""
    found = other_call_syntaxes(rows, fmt)
    if found:
        (label, choice), count = found.most_common(1)[0]
        log.warning("eval: %d missed_call / malformed_call sample(s) look like calls in format=%s syntax, "
                    "not format=%s; did you mean %s?", count, label, fmt.name, choice)


def _categories(rows: list[dict]) -> dict:
    counts = Counter(row["category"] for row in rows)
    return {category: report.rate_with_interval(counts[category], len(rows)) for category in CATEGORIES}


def compute_metrics(rows: list[dict]) -> dict:
    """n, category rates with 95 % Wilson intervals, call accuracy, breakdowns by source and position."""
    call_rows = [row for row in rows if row["expects_call"]]
    text_rows = [row for row in rows if not row["expects_call"]]
    by_source, by_position = defaultdict(list), defaultdict(list)
    for row in rows:
        by_source[row["source"]].append(row)
        by_position[row["position"]].append(row)
    positions = [p for p in ("first", "middle", "last") if p in by_position] + \
        sorted(p for p in by_position if p not in ("first", "middle", "last"))
    return {
        "n": len(rows),
        "categories": _categories(rows),
        "call_accuracy": report.rate_or_undefined(sum(r["category"] == "ok" for r in call_rows), len(call_rows)),
        "text_accuracy": report.rate_or_undefined(sum(r["category"] == "ok" for r in text_rows), len(text_rows)),
        "by_source": {source: {"n": len(group), "categories": _categories(group)}
                      for source, group in sorted(by_source.items())},
        "by_position": {position: {"n": len(by_position[position]), "categories": _categories(by_position[position])}
                        for position in positions},
    }


def flat_metrics(metrics: dict) -> dict:
    """The numbers logged to wandb; an undefined rate (None: no samples) is left out rather than logged as 0."""
    flat = {"eval/n": metrics["n"], "eval/call_accuracy": metrics["call_accuracy"]["rate"]}
    for category, entry in metrics["categories"].items():
        flat[f"eval/{category}"] = entry["rate"]
    for position, entry in metrics["by_position"].items():
        flat[f"eval/position/{position}/ok"] = entry["categories"]["ok"]["rate"]
    return {key: value for key, value in flat.items() if value is not None}


def load_previous(directory: str) -> dict:
    """metrics.json of an earlier eval: `directory` itself or its `eval/` subfolder."""
    for candidate in (Path(directory) / "metrics.json", Path(directory) / "eval" / "metrics.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise FileNotFoundError(f"eval.compare_to={directory!r}: no metrics.json there or in its eval/ folder")


# --- outputs -----------------------------------------------------------------------------------------

def worst_examples(rows: list[dict], category: str, limit: int) -> list[dict]:
    """The prompts that fail in `category` most often (share of their samples), one sample of each."""
    per_id: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        per_id[row["id"]].append(row)
    failing = [(sum(r["category"] == category for r in group) / len(group), group) for group in per_id.values()
               if any(r["category"] == category for r in group)]
    failing.sort(key=lambda item: -item[0])
    return [{"share": share, **next(r for r in group if r["category"] == category)}
            for share, group in failing[:limit]]


def _quote(text: str, limit: int = 300) -> str:
    text = text if len(text) <= limit else text[:limit] + " ..."
    return "\n".join("    " + line for line in text.splitlines() or [""])


def render_report(metrics: dict, rows: list[dict], before: dict | None, worst: int) -> str:
    series = {"before": before["categories"], "after": metrics["categories"]} if before else \
        {"this run": metrics["categories"]}
    lines = ["# Evaluation", "", f"{metrics['n']} samples over {metrics['prompts']} prompts; "
             f"settings: `{json.dumps(metrics['settings'])}`.",
             "Rates are shares of samples with a 95 % Wilson interval and the count.", "",
             report.category_table(series), "",
             f"Call accuracy (samples whose reference calls a function): "
             f"{report.format_rate(metrics['call_accuracy'])}."]
    if before:
        lines.append(f"Before: {report.format_rate(before['call_accuracy'])}.")
    lines += ["", "![categories](categories.png)", "", "## By position of the expected turn", "",
              report.breakdown_table(metrics["by_position"], "position"), "", "## By source", "",
              report.breakdown_table(metrics["by_source"], "source"), ""]
    if metrics.get("unmatched_predictions") or metrics.get("examples_without_prediction"):
        lines += [f"{metrics['unmatched_predictions']} prediction(s) matched no example; "
                  f"{metrics['examples_without_prediction']} example(s) had no prediction.", ""]
    predictions = metrics.get("predictions") or {}
    if predictions.get("quarantined"):
        lines += [f"{predictions['quarantined']} of {predictions['read']} prediction row(s) could not be "
                  "used: see the run's quarantine file.", ""]
    lines += ["## Worst examples per failure category", ""]
    for category in FAILURE_CATEGORIES:
        examples = worst_examples(rows, category, worst)
        if not examples:
            continue
        lines += [f"### `{category}`", ""]
        for example in examples:
            lines += [f"- `{example['id']}` ({example['share']:.0%} of its samples): {example['detail']}", "",
                      _quote(example["text"]), ""]
    return "\n".join(lines)


def write_outputs(out: Path, metrics: dict, rows: list[dict], before: dict | None, worst: int) -> dict:
    paths = {
        "metrics": atomic_write_json(out / "metrics.json", metrics),
        "verdicts": atomic_write_jsonl(out / "verdicts.jsonl", (
            {key: row[key] for key in ("id", "sample", "category", "detail", "source", "position", "text")}
            for row in rows)),
        "report": atomic_write_text(out / "report.md", render_report(metrics, rows, before, worst)),
    }
    rates = {c: e["rate"] for c, e in metrics["categories"].items()}
    series = {"before": {c: e["rate"] for c, e in before["categories"].items()}, "after": rates} if before else \
        {"this run": rates}
    paths["chart"] = report.category_chart(out / "categories.png", series, title="Verdicts by category")
    return {name: str(path) for name, path in paths.items()}
