"""One SFT run of the default job's recipe in its own process: `python -m benchmarks.sft_train SPEC_JSON` (started by
new_tokens; not a benchmark of its own).

The config is the default job's (`stage=pipeline`, conf/stage/pipeline.yaml) with `overrides`, turned into the
config of its SFT step exactly as the pipeline does (`step_config.build_step_cfg`), then `stages.sft.run`.

SPEC keys: result (JSON file written at the end), run_dir, overrides, threads (torch intra-op threads).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(spec: dict) -> dict:
    import torch

    from benchmarks import _support
    from polaris_dpo import step_config
    from polaris_dpo.stages import sft

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    rss_after_import = _support.current_rss_mib()
    run_dir = Path(spec["run_dir"])
    cfg = _support.compose(["stage=pipeline", *spec["overrides"]], run_dir)
    step_cfg = step_config.build_step_cfg(cfg, run_dir, "sft", "sft", cli_keys=set())
    begin, begin_cpu = time.perf_counter(), time.process_time()
    outcome = sft.run(step_cfg)
    end, end_cpu = time.perf_counter(), time.process_time()
    record = json.loads((Path(outcome["output_dir"]) / "training.json").read_text())
    metrics = outcome["metrics"]
    result = {
        "loss_curve": record["loss_curve"],
        "trainable_parameters": metrics["trainable_parameters"],
        "total_parameters": metrics["total_parameters"],
        "global_step": metrics["global_step"],
        "train_seconds": metrics.get("train_runtime"),
        "run_seconds": end - begin,
        "run_cpu_seconds": end_cpu - begin_cpu,
        "peak_rss_mib": _support.peak_rss_mib(),
        "rss_after_import_mib": rss_after_import,
        "adapter_mib": sum(f.stat().st_size for f in Path(outcome["output_dir"]).glob("adapter_model*")) / 2**20,
        "settings": {key: step_cfg.sft[key] for key in ("learning_rate", "per_device_train_batch_size", "max_length",
                                                        "warmup_ratio", "max_steps")},
    }
    _support.write_result(spec["result"], result)
    return result


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
