"""Checks made before any work: the stage name, every pipeline step's overrides, and mining's resume fingerprint."""

from __future__ import annotations

import os
import re

import pytest
from test_pipeline import step_override

from polaris_dpo import step_config
from polaris_dpo.stages import mine, pipeline, run_stage


def test_unknown_stage_name_is_a_clear_error(make_cfg):
    with pytest.raises(ValueError, match=r"stage.name='evals'.*pipeline, sft, mine, dpo, eval, merge"):
        run_stage("evals", make_cfg())


def test_plus_in_a_passthrough_override_adds_the_key(make_cfg, tmp_path):
    cfg = make_cfg(step_override("sft", "+sft.trl.packing_strategy=bfd", "sft.trl.seed=3"))
    sub = step_config.step_cfg(cfg, tmp_path, "sft", "sft")
    assert sub.sft.trl == {**cfg.sft.trl, "packing_strategy": "bfd", "seed": 3}
    assert set(sub) == set(cfg)


@pytest.mark.parametrize(("override", "message"), [
    ("~sft.trl.seed", "deleting a key"),
    ("+sft.learning_rate=0.1", "'\\+' adds a key"),
    ("sft.max_steps", "expected key=value"),
])
def test_bad_override_forms_are_named(make_cfg, tmp_path, override, message):
    cfg = make_cfg(step_override("sft", override))
    with pytest.raises(ValueError, match=re.escape(f"pipeline.step_overrides.sft: '{override}'") + ".*" + message):
        step_config.step_cfg(cfg, tmp_path, "sft", "sft")


def test_step_config_keeps_the_schema_types(make_cfg, tmp_path):
    cfg = make_cfg(step_override("mine", "mine.max_prompts=abc"))
    with pytest.raises(ValueError, match="pipeline.step_overrides.mine: 'mine.max_prompts=abc'.*Integer"):
        step_config.step_cfg(cfg, tmp_path, "mine_1", "mine")
    sub = step_config.step_cfg(make_cfg(step_override("mine", "mine.max_prompts=7")), tmp_path, "mine_1", "mine")
    assert sub.mine.max_prompts == 7


def _fail_if_run(*args, **kwargs):
    raise AssertionError("a step ran although the overrides are wrong")


@pytest.mark.parametrize(("overrides", "message"), [
    (["+" + step_override("evaluate", "eval.samples_per_prompt=1")],
     "pipeline.step_overrides.evaluate: not a pipeline stage; expected one of: sft, mine, dpo, eval, merge"),
    ([step_override("dpo", "dpo.bta=0.3")], "pipeline.step_overrides.dpo: 'dpo.bta=0.3'"),
    ([step_override("merge", "merge.verify_prompts=many")], "merge.verify_prompts=many"),
    ([step_override("mine", "mine.source=sampled")], "mine.source='sampled'"),
])
def test_every_step_is_checked_before_the_first_runs(make_cfg, tmp_path, monkeypatch, overrides, message):
    from polaris_dpo import models

    monkeypatch.setattr(models, "model_path_for", _fail_if_run)
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        pipeline.run(make_cfg("wandb.mode=disabled", *overrides, run_dir=run_dir))
    assert not (run_dir / pipeline.STATE_FILE).exists()


def _model_folder(path, weights: bytes):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_bytes(weights)
    (path / "training.json").write_text("{}")
    return str(path)


def test_mine_fingerprint_follows_the_model(make_cfg, tmp_path):
    model = _model_folder(tmp_path / "sft", b"A" * 10)
    base = mine.fingerprint(make_cfg("stage=mine"), model)
    assert mine.fingerprint(make_cfg("stage=mine"), model) == base
    for override in ("model.dtype=bfloat16", "model.revision=v2", "model.load_in_4bit=true", "model=mistral-7b"):
        assert mine.fingerprint(make_cfg("stage=mine", override), model) != base, override

    _model_folder(tmp_path / "sft", b"B" * 12)  # retrained at the same path
    assert mine.fingerprint(make_cfg("stage=mine"), model) != base


def test_mine_fingerprint_sees_a_same_size_retrain(make_cfg, tmp_path):
    model = _model_folder(tmp_path / "sft", b"A" * 10)
    weights = tmp_path / "sft" / "adapter_model.safetensors"
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))
    base = mine.fingerprint(make_cfg("stage=mine"), model)
    _model_folder(tmp_path / "sft", b"B" * 10)
    os.utime(weights, ns=(2_000_000_000, 2_000_000_000))
    assert mine.fingerprint(make_cfg("stage=mine"), model) != base
