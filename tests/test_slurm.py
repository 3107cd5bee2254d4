"""Against a real local SLURM (scripts/slurm/local_slurm.sh): a stage dpo sweep through hydra/launcher=slurm
with its summary, and a training job that is requeued mid-run and resumes from its checkpoint."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "model.tiny.num_hidden_layers=2", "hardware.torch_threads=1", "train.finetune=full"]
DPO_FAST = ["dpo.per_device_train_batch_size=2", "dpo.logging_steps=1", "dpo.max_length=128"]

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")
def local_slurm() -> None:
    """Start the local one-node SLURM (idempotent); skip with the script's reason where it cannot run."""
    done = subprocess.run(["bash", str(REPO / "scripts/slurm/local_slurm.sh")], capture_output=True, text=True,
                          timeout=900)
    if done.returncode == 3:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, f"local_slurm.sh failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def slurm_env(tiny_cache, make_cfg) -> dict:
    """Environment for SLURM jobs (sbatch exports it), with the tiny model built once beforehand."""
    from polaris_dpo import formats, models

    cfg = make_cfg(*TINY)
    models.resolve_model_path(cfg.model, formats.from_config(cfg.format).special_tokens)
    return {**os.environ, "POLARIS_DPO_CACHE": str(tiny_cache), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}


def write_pairs(folder: Path, rows: int = 8) -> Path:
    """A tiny spacing pair set in the stored pair-row shape (docs/architecture.md)."""
    folder.mkdir(parents=True)
    with open(folder / "train.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                "chosen": [{"role": "assistant", "content": f"The answer is: {2 * i}."}],
                "rejected": [{"role": "assistant", "content": f"The answer is:{2 * i} ."}],
                "tools": "[]", "category": "bad_spacing",
            }) + "\n")
    return folder


def job_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    return out or "GONE"


def test_dpo_sweep_on_slurm_writes_summary(local_slurm, slurm_env, tmp_path):
    pairs = write_pairs(tmp_path / "pairs")
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "polaris_dpo", "-m", "hydra/launcher=slurm", "stage=dpo", "dpo.beta=0.05,0.1",
           f"dpo.pairs={pairs}", "dpo.max_steps=3", *DPO_FAST, *TINY,
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(cmd, cwd=REPO, env=slurm_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    logs = list((sweep_dir / ".submitit").glob("*_*/*_log.err"))
    assert len(logs) == 2, "expected one SLURM array task per point"
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert ["dpo.beta=0.05" in r["overrides"] for r in rows] == [True, False]
    assert ["dpo.beta=0.1" in r["overrides"] for r in rows] == [False, True]
    for row in rows:
        assert float(row["global_step"]) == 3
        assert float(row["rewards/margins"]) != 0.0
        assert 0.0 <= float(row["rewards/accuracies"]) <= 1.0
        assert ".submitit" in row["log"] and Path(row["log"]).is_file()
    # a larger beta scales the implicit rewards, so the two points report different margins
    assert rows[0]["rewards/margins"] != rows[1]["rewards/margins"]
    markdown = (sweep_dir / "summary.md").read_text()
    assert "2 points, 2 completed" in markdown and "| dpo.beta=0.05 |" in markdown


def test_requeued_training_job_resumes_from_checkpoint(local_slurm, slurm_env, tmp_path):
    pairs = write_pairs(tmp_path / "pairs")
    run_dir, out_file = tmp_path / "run", tmp_path / "job.out"
    accelerate_cfg = tmp_path / "accelerate.yaml"
    accelerate_cfg.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: 'no'\n"
                              "num_machines: 1\nnum_processes: 1\nuse_cpu: true\n")
    env = {**slurm_env, "RUN_DIR": str(run_dir), "ACCELERATE_CONFIG": str(accelerate_cfg), "PYTHON": sys.executable}
    submit = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=1", "--time=10", f"--output={out_file}",
         "scripts/slurm/train.sbatch", "stage=dpo", f"dpo.pairs={pairs}", "dpo.max_steps=60", "dpo.save_steps=5",
         *DPO_FAST, *TINY],
        cwd=REPO, env=env, capture_output=True, text=True, check=True)
    job_id = submit.stdout.strip().split(";")[0]
    checkpoints = run_dir / "dpo" / "checkpoints"
    try:
        deadline = time.time() + 240
        while not list(checkpoints.glob("checkpoint-*")):
            assert time.time() < deadline, f"no checkpoint appeared:\n{out_file.read_text() if out_file.exists() else ''}"
            assert job_state(job_id) != "GONE", f"job ended before its first checkpoint:\n{out_file.read_text()}"
            time.sleep(0.5)
        assert not (run_dir / "dpo" / "training.json").exists(), "the job finished before it could be requeued"
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        # SLURM holds a requeued job (BeginTime) for the credential lifetime, ~2 min: release it now
        for _ in range(60):
            if job_state(job_id) == "PENDING":
                subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], capture_output=True)
                break
            time.sleep(0.5)
        deadline = time.time() + 300
        while job_state(job_id) != "GONE":
            assert time.time() < deadline, f"requeued job did not finish:\n{out_file.read_text()}"
            time.sleep(1)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)

    log = out_file.read_text()
    assert "(restart 0)" in log and "(restart 1)" in log and "resume=true" in log
    resumed = re.search(r"train\.resume: continuing from \S*checkpoint-(\d+)", log)
    assert resumed, f"the requeued job did not resume from a checkpoint:\n{log[-3000:]}"
    assert int(resumed.group(1)) > 0
    assert "training exited with status 0" in log
    state = json.loads(sorted(checkpoints.glob("checkpoint-*/trainer_state.json"),
                              key=lambda p: int(p.parent.name.split("-")[1]))[-1].read_text())
    assert state["global_step"] == 60
    record = json.loads((run_dir / "dpo" / "training.json").read_text())
    assert record["metrics"]["global_step"] == 60
