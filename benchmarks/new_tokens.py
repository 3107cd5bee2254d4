"""The format's new tokens: only their rows train (`train.lora.new_tokens=rows`) against the whole LM head (`head`,
the default; with a tied head the whole shared matrix), on the tiny model and on SmolLM2-135M-Instruct.

Each side is the default job's SFT step (conf/stage/pipeline.yaml: LoRA r16, lr 1e-3, batches of 8, max 512 tokens,
same seed, so the same batches in the same order) in a process of its own; on SmolLM2 it stops early to fit the
benchmark's time. Reported: trainable parameters, peak memory, time per step and the loss curves. The losses are
judged over the last third of the steps: the mean of the per-step differences (both sides see the same batch at each
step) against its standard error (from the spread of those differences).
"""

from __future__ import annotations

import statistics

from benchmarks import _support

SIDES = ("rows", "head")


def steps(model: str, quick: bool) -> int:
    """SFT steps to run: fewer than the recipe's, to fit the benchmark's time."""
    if model == "tiny":
        return 8 if quick else 12
    return 3 if quick else 4


def tail_comparison(rows: list[float], head: list[float], last: int) -> tuple[float, float]:
    """(mean of rows - head over the last `last` steps, standard error of that mean from the paired differences'
    step-to-step spread)."""
    diffs = [a - b for a, b in zip(rows[-last:], head[-last:], strict=True)]
    spread = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    return statistics.mean(diffs), spread / len(diffs) ** 0.5


def measure(model: str, quick: bool, scratch) -> tuple[list, list]:
    cap = steps(model, quick)
    recipe_steps = _support.compose(["stage=pipeline"], scratch / "recipe").sft.max_steps
    results = {}
    for side in SIDES:
        overrides = [f"model={model}", f"train.lora.new_tokens={side}", "sft.logging_steps=1", "sft.save_steps=100000",
                     "wandb.mode=disabled", f"sft.max_steps={cap}"]
        spec = {"result": str(scratch / f"{model}-{side}.json"), "run_dir": str(scratch / f"{model}-{side}"),
                "overrides": overrides, "threads": 2}
        results[side] = _support.child("sft_train", spec, timeout=1800)
    rows_run, head_run = results["rows"], results["head"]
    rows_loss = [loss for _, loss in rows_run["loss_curve"]]
    head_loss = [loss for _, loss in head_run["loss_curve"]]
    last = max(2, len(rows_loss) // 3)
    difference, noise = tail_comparison(rows_loss, head_loss, last)
    rows = [
        ("rows: trainable parameters", rows_run["trainable_parameters"], "params"),
        ("head: trainable parameters", head_run["trainable_parameters"], "params"),
        ("ratio rows / head (trainable parameters)",
         round(_support.ratio(rows_run["trainable_parameters"], head_run["trainable_parameters"]), 3), "x"),
        ("rows: peak memory (RSS)", round(rows_run["peak_rss_mib"]), "MiB"),
        ("head: peak memory (RSS)", round(head_run["peak_rss_mib"]), "MiB"),
        ("ratio rows / head (peak RSS above the imports)",
         round(_support.ratio(rows_run["peak_rss_mib"] - rows_run["rss_after_import_mib"],
                              head_run["peak_rss_mib"] - head_run["rss_after_import_mib"]), 3), "x"),
        ("rows: seconds per step", round(rows_run["train_seconds"] / rows_run["global_step"], 2), "s"),
        ("head: seconds per step", round(head_run["train_seconds"] / head_run["global_step"], 2), "s"),
        ("rows: saved adapter", round(rows_run["adapter_mib"], 1), "MiB"),
        ("head: saved adapter", round(head_run["adapter_mib"], 1), "MiB"),
        ("rows: first / last loss", f"{rows_loss[0]:.3f} / {rows_loss[-1]:.3f}", ""),
        ("head: first / last loss", f"{head_loss[0]:.3f} / {head_loss[-1]:.3f}", ""),
        (f"loss rows - head, mean of the last {last} steps", round(difference, 4), ""),
        (f"its noise (standard error over those {last} steps)", round(noise, 4), ""),
    ]
    within = abs(difference) <= 2 * noise
    s = rows_run["settings"]
    notes = [
        f"{model}: the default job's SFT step, lr {s['learning_rate']}, batch {s['per_device_train_batch_size']}, "
        f"max_length {s['max_length']}, warmup {s['warmup_ratio']}, {rows_run['global_step']} steps"
        f" of the recipe's {recipe_steps} (stopped early for time), 2 torch threads",
        f"{model} loss per step, rows: {', '.join(f'{x:.3f}' for x in rows_loss)}",
        f"{model} loss per step, head: {', '.join(f'{x:.3f}' for x in head_loss)}",
        f"{model} verdict: the rows-only loss is "
        + ("within noise of the whole head's (|difference| <= 2 standard errors)" if within else
           f"{'above' if difference > 0 else 'below'} the whole head's beyond noise"),
    ]
    return [(f"{model}: {label}", value, unit) for label, value, unit in rows], notes


def run(quick: bool) -> dict:
    scratch = _support.scratch_dir()
    rows, notes = [], []
    for model in _support.MODELS:
        model_rows, model_notes = measure(model, quick, scratch)
        rows += model_rows
        notes += model_notes
    notes.append("the tiny model's weights are random: its head is what learns fastest there, so its whole head "
                 "is not a fair stand-in for a pretrained model's; SmolLM2 is the measure for the default")
    notes.append("the default is the whole head (`train.lora.new_tokens=head`): on SmolLM2 rows-only does not match "
                 "its loss; the default job's full 24-step SFT and its evaluation with each are in "
                 "docs/default-job.md (seed 42: loss 0.33 against 0.51, `ok` 81.8 % against 75.4 %)")
    return {"title": "New tokens: their rows only vs the whole LM head (SFT step of the default job)",
            "rows": rows, "notes": notes}
