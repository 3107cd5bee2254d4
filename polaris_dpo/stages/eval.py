"""stage eval: judge samples of a model (or a file of predictions) on held-out prompts.

    python -m polaris_dpo stage=eval [eval.model_path=DIR] [eval.predictions=FILE] [eval.compare_to=DIR]

1. read the configured data; the held-out conversations (`data.eval_fraction`), cut into examples;
2. texts: `eval.predictions` (JSONL of {"id", "text"}, matched by example id, or by conversation id
   where a conversation has one example, e.g. BFCL; no model, no torch) or `eval.samples_per_prompt`
   samples at `eval.temperature` from `eval.model_path` (adapter or model) or the base model;
3. judge every text; write metrics.json, verdicts.jsonl, report.md, categories.png; log to wandb.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

from polaris_dpo import formats, messages, readers, report, tracking
from polaris_dpo.config import CATEGORIES, FAILURE_CATEGORIES
from polaris_dpo.judge import JudgeOptions, expected_calls, judge

log = logging.getLogger(__name__)


def run(cfg, output_dir: str | Path | None = None, model_path: str | None = None) -> dict:
    """Evaluate; `output_dir` defaults to the run directory, `model_path` to `eval.model_path`."""
    out = Path(output_dir or cfg.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmt = formats.from_config(cfg.format)
    options = JudgeOptions.from_config(cfg.judge)
    if cfg.eval.predictions:
        examples = load_examples(cfg, out, held_out_only=False)
        samples, unmatched = read_predictions(cfg.eval.predictions, examples)
        settings = {"predictions": str(cfg.eval.predictions)}
    else:
        examples = load_examples(cfg, out, held_out_only=True)
        samples, unmatched = sample_model(cfg, fmt, examples, model_path or cfg.eval.model_path), []
        settings = {"model": str(model_path or cfg.eval.model_path or cfg.model.name_or_path),
                    "samples_per_prompt": 1 if cfg.eval.temperature <= 0 else cfg.eval.samples_per_prompt,
                    "temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "seed": cfg.seed}
    verdicts = judge_samples(samples, fmt, options)
    metrics = compute_metrics(verdicts)
    metrics.update(settings=settings, prompts=len({v["id"] for v in verdicts}),
                   unmatched_predictions=len(unmatched),
                   examples_without_prediction=len(examples) - len({v["id"] for v in verdicts}))
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


def read_predictions(path: str, examples: list[dict]) -> tuple[list[tuple[dict, str]], list[str]]:
    """[(example, text)] in file order, and the ids of predictions that match no example.

    An id is an example id (`conv#turn`) or a conversation id whose conversation has one example.
    Several rows with one id are several samples of that prompt.
    """
    by_id = {example["id"]: example for example in examples}
    per_conversation = Counter(example["conversation_id"] for example in examples)
    for example in examples:
        if per_conversation[example["conversation_id"]] == 1:
            by_id.setdefault(example["conversation_id"], example)
    samples, unmatched = [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}, line {line_number}: field 'id' and string field 'text' are required")
            example = by_id.get(str(row["id"]))
            if example is None:
                unmatched.append(str(row["id"]))
            else:
                samples.append((example, row["text"]))
    if unmatched:
        log.warning("eval: %d prediction(s) match no example, e.g. %s", len(unmatched), unmatched[:3])
    if not samples:
        raise ValueError(f"{path}: no prediction id matches an example of the data "
                         f"(first ids: {unmatched[:3]}; example ids look like {examples[0]['id']!r})")
    return samples, unmatched


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
        "metrics": report.atomic_write_json(out / "metrics.json", metrics),
        "verdicts": report.atomic_write_jsonl(out / "verdicts.jsonl", (
            {key: row[key] for key in ("id", "sample", "category", "detail", "source", "position", "text")}
            for row in rows)),
        "report": report.atomic_write_text(out / "report.md", render_report(metrics, rows, before, worst)),
    }
    rates = {c: e["rate"] for c, e in metrics["categories"].items()}
    series = {"before": {c: e["rate"] for c, e in before["categories"].items()}, "after": rates} if before else \
        {"this run": rates}
    paths["chart"] = report.category_chart(out / "categories.png", series, title="Verdicts by category")
    return {name: str(path) for name, path in paths.items()}
