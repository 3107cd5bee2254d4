"""wandb settings: decided per job from the config and the user's own environment, never from the job before."""

from __future__ import annotations

import os

from polaris_dpo import tracking


def test_a_job_does_not_inherit_the_previous_jobs_wandb_settings(make_cfg, tmp_path, monkeypatch):
    for name in tracking._WANDB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking, "_USER_ENVIRONMENT", {name: None for name in tracking._WANDB_VARIABLES})
    monkeypatch.setattr(tracking, "_has_wandb_key", lambda: False)
    first = make_cfg("wandb.mode=offline", "wandb.entity=team-a", run_dir=tmp_path / "0")
    assert tracking.report_to(first) == ["wandb"]
    assert os.environ["WANDB_DIR"] == str(tmp_path / "0") and os.environ["WANDB_ENTITY"] == "team-a"
    second = make_cfg("wandb.mode=auto", run_dir=tmp_path / "1")
    assert tracking.wandb_mode(second) == "disabled"  # no key: the first job's WANDB_MODE=offline is not a choice
    third = make_cfg("wandb.mode=offline", run_dir=tmp_path / "2")
    assert tracking.report_to(third) == ["wandb"]
    assert os.environ["WANDB_DIR"] == str(tmp_path / "2") and "WANDB_ENTITY" not in os.environ


def test_the_users_own_environment_still_wins(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_USER_ENVIRONMENT", {"WANDB_MODE": "offline", "WANDB_PROJECT": None,
                                                        "WANDB_ENTITY": "mine", "WANDB_DIR": str(tmp_path / "w")})
    for name in tracking._WANDB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cfg = make_cfg("wandb.mode=auto", run_dir=tmp_path / "run")
    assert tracking.report_to(cfg) == ["wandb"]
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_ENTITY"] == "mine"
    assert os.environ["WANDB_DIR"] == str(tmp_path / "w")
