"""DDP with two CPU processes (gloo): stage sft then stage dpo, end to end through the CLI.

accelerate's launcher starts a single process for a CPU-only config (its multi-CPU path needs
mpirun), so on CPU the two processes come from torchrun; on GPUs `accelerate launch` does the same.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from conftest import REPO
from test_sft import TINY, write_pairs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "POLARIS_DPO_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "polaris_dpo", "model=tiny", *TINY, "hardware.torch_threads=1", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_cpu_processes_sft_then_dpo(tiny_cache, tmp_path):
    sft = torchrun("stage=sft", "data.limit=16", "sft.max_steps=2", "sft.per_device_train_batch_size=2",
                   "sft.max_length=256", "sft.logging_steps=1", f"run_dir={tmp_path / 'sft_run'}", cache=tiny_cache)
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert sft.stderr.count("sft: lora fine-tuning") + sft.stdout.count("sft: lora fine-tuning") == 2  # two ranks
    sft_out = tmp_path / "sft_run" / "sft"
    record = json.loads((sft_out / "training.json").read_text())
    assert record["metrics"]["global_step"] == 2 and record["metrics"]["epoch"] > 0

    pairs = write_pairs(tmp_path / "pairs", n=8)
    dpo = torchrun("stage=dpo", f"dpo.pairs={pairs}", f"dpo.sft_model={sft_out}", "dpo.max_steps=2",
                   "dpo.per_device_train_batch_size=2", "dpo.max_length=256", "dpo.logging_steps=1",
                   f"run_dir={tmp_path / 'dpo_run'}", cache=tiny_cache)
    assert dpo.returncode == 0, dpo.stderr[-3000:]
    record = json.loads((tmp_path / "dpo_run" / "dpo" / "training.json").read_text())
    assert record["metrics"]["global_step"] == 2 and "rewards/margins" in record["metrics"]
    assert (tmp_path / "dpo_run" / "dpo" / "adapter_model.safetensors").is_file()
