"""The sweep summary with Hydra's local (basic) launcher, and the preemption callback, without SLURM."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from polaris_dpo import sweep

APP = '''
import json
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

ConfigStore.instance().store(name="cfg", node={
    "beta": 0.1, "hydra": {"callbacks": {"summary": {"_target_": "polaris_dpo.sweep.SweepSummary"}}}})


@hydra.main(version_base="1.3", config_path=None, config_name="cfg")
def app(cfg):
    if cfg.beta < 0:
        raise ValueError(f"beta must be positive, got {cfg.beta}")
    ckpt = Path(HydraConfig.get().runtime.output_dir) / "dpo" / "checkpoints" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    history = [{"loss": 0.69, "rewards/margins": 0.0, "step": 1},
               {"loss": 0.5, "rewards/margins": cfg.beta, "rewards/accuracies": 0.75, "step": 3}]
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 3, "log_history": history}))
    return {"output_dir": str(ckpt.parent.parent), "eval": {"rates": {"ok": 0.5 + cfg.beta}}}


app()
'''


def test_local_multirun_summary_lists_every_point_and_the_failure(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "app.py", "-m", "beta=0.1,-1,0.2", f"hydra.sweep.dir={sweep_dir}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "beta must be positive" in done.stderr  # the sweep reports the failure...
    with open(sweep_dir / "summary.csv") as f:  # ...and the summary still lists every point
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
    assert [r["overrides"] for r in rows] == ["beta=0.1", "beta=-1", "beta=0.2"]
    assert float(rows[2]["rewards/margins"]) == 0.2 and float(rows[2]["loss"]) == 0.5
    assert float(rows[0]["eval.rates.ok"]) == pytest.approx(0.6) and float(rows[0]["global_step"]) == 3
    assert rows[1]["rewards/margins"] == "" and "ValueError: beta must be positive" in rows[1]["error"]
    assert rows[1]["log"].endswith("1/app.log") and Path(rows[1]["log"]).is_file()
    markdown = (sweep_dir / "summary.md").read_text()
    assert "3 points, 2 completed, 1 failed" in markdown
    assert "| 1 | failed | beta=-1 |" in markdown


def test_point_that_never_reported_is_a_row_saying_so(tmp_path):
    sweep.atomic_write_text(tmp_path / sweep.POINTS_FILE, '{"points": [["lr=1"], ["lr=2"]]}')
    log = tmp_path / ".submitit" / "7_1" / "7_1_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("slurmstepd: error: *** JOB 8 CANCELLED DUE TO TIME LIMIT ***")
    (tmp_path / "0").mkdir()
    sweep.atomic_write_text(tmp_path / "0" / sweep.POINT_FILE,
                       '{"num": 0, "overrides": ["lr=1"], "status": "completed", "metrics": {"loss": 0.25}, "log": "x"}')
    sweep.write_summary(tmp_path)
    with open(tmp_path / sweep.SUMMARY_CSV) as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "no result"]
    assert rows[1]["log"] == str(log) and rows[1]["loss"] == ""


def test_sweep_points_follow_the_basic_sweeper_order():
    assert sweep.sweep_points(["stage=dpo", "dpo.beta=0.05,0.1", "seed=1,2"]) == [
        ["stage=dpo", "dpo.beta=0.05", "seed=1"], ["stage=dpo", "dpo.beta=0.05", "seed=2"],
        ["stage=dpo", "dpo.beta=0.1", "seed=1"], ["stage=dpo", "dpo.beta=0.1", "seed=2"]]


def test_preemption_signal_saves_then_exits_without_slurm(monkeypatch):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from polaris_dpo.preemption import EXIT_PREEMPTED, PreemptionCallback

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    callback = PreemptionCallback()
    args, state, control = TrainingArguments(output_dir="unused", use_cpu=True), TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    try:
        assert not callback.on_step_end(args, state, control).should_save
        os.kill(os.getpid(), signal.SIGUSR1)
        control = callback.on_step_end(args, state, control)
        assert control.should_save and control.should_training_stop
        with pytest.raises(SystemExit) as exit_info:
            callback.on_save(args, state, control)
        assert exit_info.value.code == EXIT_PREEMPTED
    finally:
        callback.on_train_end(args, state, control)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
