"""DPO with reference log-probs precomputed once (`dpo.precompute_ref_log_probs=true`) against computing them every
step, over several epochs: total time (trainer setup, the precompute pass and training) and its ratio.

Both runs are stage dpo in processes of their own, one torch thread each, with a fresh datasets cache (TRL caches
precomputed log-probs there: a warm cache would make the precompute look free).
"""

from __future__ import annotations

import statistics

from benchmarks import _support

WARMUP = 2


def run(quick: bool) -> dict:
    scratch = _support.scratch_dir()
    pairs, origin = _support.pair_set(scratch)
    rows_used, epochs = (16, 2) if quick else (24, 2)
    subset = _support.subset_pairs(pairs, rows_used, scratch)
    model_dir, tokenizer_dir = _support.model_folders(scratch, "tiny")
    results = {}
    for precompute in (False, True):
        name = "precomputed" if precompute else "every_step"
        settings = {"max_steps": -1, "num_train_epochs": float(epochs), "max_length": 512,
                    "per_device_train_batch_size": 4, "threads": 1, "precompute_ref_log_probs": precompute}
        spec = {"side": "ours", "result": str(scratch / f"{name}.json"), "run_dir": str(scratch / name),
                "pairs": str(subset), "model_dir": model_dir, "tokenizer_dir": str(tokenizer_dir),
                "overrides": ["model=tiny"], "warmup": WARMUP, "settings": settings}
        results[name] = _support.child("dpo_train", spec)
    every, pre = results["every_step"], results["precomputed"]

    def cpu_step(result):
        return statistics.median(result["cpu_step_seconds"][WARMUP:])

    rows = [
        ("every step: CPU seconds, setup + training", round(every["run_cpu_seconds"], 2), "s"),
        ("precomputed: CPU seconds, setup + precompute + training", round(pre["run_cpu_seconds"], 2), "s"),
        ("ratio precomputed / every step (CPU time, whole run)",
         round(_support.ratio(pre["run_cpu_seconds"], every["run_cpu_seconds"]), 3), "x"),
        ("ratio precomputed / every step (wall time, whole run)",
         round(_support.ratio(pre["run_seconds"], every["run_seconds"]), 3), "x"),
        ("every step: CPU seconds per step", round(cpu_step(every), 3), "s"),
        ("precomputed: CPU seconds per step", round(cpu_step(pre), 3), "s"),
        ("ratio precomputed / every step (CPU time per training step)",
         round(_support.ratio(cpu_step(pre), cpu_step(every)), 3), "x"),
        ("precomputed: trainer setup incl. the precompute pass (wall)", round(pre["setup_seconds"], 2), "s"),
        ("every step: trainer setup (wall)", round(every["setup_seconds"], 2), "s"),
        ("every step: peak memory (RSS)", round(every["peak_rss_mib"]), "MiB"),
        ("precomputed: peak memory (RSS)", round(pre["peak_rss_mib"]), "MiB"),
    ]
    notes = [
        f"stage dpo on the default tiny model, {rows_used} pairs of {origin}, {epochs} epochs, batch 4 "
        f"({every['global_step']} steps), max_length 512, LoRA r=16; the reference is the base with the adapter "
        "off, so every-step mode pays one extra forward (no backward) per step",
        "the gain grows with the number of epochs: the precompute pass costs one reference forward per pair once",
    ]
    return {"title": "DPO: precomputed reference log-probs vs computed every step, several epochs",
            "rows": rows, "notes": notes}
