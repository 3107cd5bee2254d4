"""Credentials passed through a config never reach a file the tool or Hydra writes: config dumps, state, cards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from polaris_dpo.__main__ import write_resolved_config
from polaris_dpo.redact import REDACTED, override_secrets, scrub
from polaris_dpo.stages import mine
from polaris_dpo.stages.pipeline import config_fingerprint

SECRET = "hf_NotARealToken0123456789"


def test_scrub_redacts_credentials_and_keeps_token_settings():
    config = {"trl": {"hub_token": SECRET, "push_to_hub": True},
              "wandb": {"api_key": SECRET, "key": SECRET, "project": "p"},
              "HF_TOKEN": SECRET, "token": SECRET, "db_password": SECRET, "client_secret": SECRET,
              "callbacks": [{"auth_token": SECRET}],
              "eval": {"max_new_tokens": 64, "verify_max_new_tokens": 32, "pad_token": "<pad>",
                       "special_tokens": ["<|fn_start|>"], "token_ids": [1, 2], "use_auth_token": False},
              "model": {"vocab_size": 2048, "hub_token": None}}
    scrubbed = scrub(config)
    assert SECRET not in repr(scrubbed)
    assert scrubbed["trl"] == {"hub_token": REDACTED, "push_to_hub": True}
    assert scrubbed["wandb"] == {"api_key": REDACTED, "key": REDACTED, "project": "p"}
    assert scrubbed["callbacks"] == [{"auth_token": REDACTED}]
    assert scrubbed["eval"] == config["eval"]  # counts, tokenizer tokens and a false flag are not secrets
    assert scrubbed["model"] == config["model"]  # nothing to hide in an unset token
    assert config["trl"]["hub_token"] == SECRET  # a copy: the config itself is unchanged


def test_run_config_and_pipeline_state_hide_a_passed_token(make_cfg):
    cfg = make_cfg(f"+sft.trl.hub_token={SECRET}", f"+dpo.trl.hub_token={SECRET}")
    assert cfg.sft.trl.hub_token == SECRET  # the trainer still gets it
    written = write_resolved_config(cfg).read_text(encoding="utf-8")
    assert SECRET not in written
    dumped = yaml.safe_load(written)
    assert dumped["sft"]["trl"]["hub_token"] == REDACTED and dumped["eval"]["max_new_tokens"] == cfg.eval.max_new_tokens
    assert SECRET not in repr(config_fingerprint(cfg))


def test_a_token_in_a_pipeline_step_override_is_redacted_too(make_cfg):
    step = f"pipeline.step_overrides.sft=['sft.trl.hub_token={SECRET}','sft.max_steps=3']"
    cfg = make_cfg(step)
    written = write_resolved_config(cfg).read_text(encoding="utf-8")
    assert SECRET not in written and "sft.trl.hub_token=<redacted>" in written and "sft.max_steps=3" in written
    assert SECRET not in repr(config_fingerprint(cfg))
    assert override_secrets([step, f"+dpo.trl.hub_token='{SECRET}'", "model.pad_token=x"]) == {SECRET}


def test_a_token_for_the_trainer_goes_through_the_environment_not_into_its_pickled_arguments(make_cfg, monkeypatch):
    from trl import SFTConfig

    from polaris_dpo.training import trainer_args

    monkeypatch.delenv("HF_TOKEN", raising=False)
    cfg = make_cfg(f"+sft.trl.hub_token={SECRET}")
    args = trainer_args(SFTConfig, cfg, cfg.sft, Path(cfg.run_dir), "sft")
    assert args.hub_token is None and os.environ["HF_TOKEN"] == SECRET  # what training_args.bin pickles


def test_trl_passthrough_may_not_shadow_a_stage_key_and_warmup_steps_replaces_the_ratio(make_cfg):
    from trl import SFTConfig

    from polaris_dpo.training import trainer_args

    cfg = make_cfg("+sft.trl.learning_rate=0.5")
    with pytest.raises(ValueError, match=r"sft.trl.learning_rate: set sft.learning_rate instead"):
        trainer_args(SFTConfig, cfg, cfg.sft, Path(cfg.run_dir), "sft")
    cfg = make_cfg("+sft.trl.warmup_steps=10", "sft.warmup_ratio=0.1")
    assert trainer_args(SFTConfig, cfg, cfg.sft, Path(cfg.run_dir), "sft").warmup_steps == 10
    cfg = make_cfg("sft.warmup_ratio=1.0")
    with pytest.raises(ValueError, match=r"sft.warmup_ratio=1.0"):
        trainer_args(SFTConfig, cfg, cfg.sft, Path(cfg.run_dir), "sft")


def test_pair_set_card_hides_a_passed_token(make_cfg, tmp_path):
    cfg = make_cfg("stage=mine", "mine.source=synthetic", "data=glaive", f"mine.pairs_dir={tmp_path}/pairs",
                   "mine.name=secret", "data.limit=20", f"+sft.trl.hub_token={SECRET}")
    pairs_dir = Path(mine.run(cfg)["pairs"])
    card = (pairs_dir / "README.md").read_text(encoding="utf-8")
    assert "hub_token: <redacted>" in card
    assert not [p for p in pairs_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_no_file_of_a_sweep_holds_a_token_passed_on_the_command_line(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "polaris_dpo", "--multirun", "stage=mine", "model=tiny", "mine.source=synthetic", "data=glaive",
         "data.limit=10", "mine.name=a,b", f"mine.pairs_dir={tmp_path}/pairs", f"+sft.trl.hub_token={SECRET}",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"multirun.yaml", "overrides.yaml", "hydra.yaml", "config.yaml", "summary.md", "README.md"} <= names
    assert [str(p) for p in written if SECRET.encode() in p.read_bytes()] == []
    assert SECRET not in done.stdout + done.stderr
    assert f"+sft.trl.hub_token={REDACTED}" in (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text()
