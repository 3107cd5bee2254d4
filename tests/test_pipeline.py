"""stage pipeline at a reduced size: every step runs, the summary matches the eval outputs, resume skips work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polaris_dpo import step_config
from polaris_dpo.config import CATEGORIES
from polaris_dpo.stages import pipeline


def step_override(stage: str, *overrides: str) -> str:
    """The command-line form of `pipeline.step_overrides.<stage>` (elements quoted: they contain `=`)."""
    return f"pipeline.step_overrides.{stage}=[" + ",".join(f"'{o}'" for o in overrides) + "]"


TINY_RUN = [
    "wandb.mode=disabled",
    step_override("sft", "train.finetune=full", "sft.max_steps=2", "sft.per_device_train_batch_size=2",
                  "sft.max_length=256"),
    step_override("dpo", "train.finetune=lora", "dpo.max_steps=1", "dpo.per_device_train_batch_size=2"),
    step_override("eval"), step_override("mine"),
    "eval.max_prompts=4", "eval.samples_per_prompt=2", "eval.max_new_tokens=8",
    "mine.max_prompts=6", "mine.samples_per_prompt=2", "mine.max_new_tokens=8",
    "merge.verify_prompts=2", "pipeline.forgetting.max_prompts=3", "pipeline.forgetting.max_new_tokens=8",
]


def test_step_names_follow_rounds():
    assert pipeline.step_names(2) == ["model", "sft", "eval_before", "mine_1", "dpo_1", "eval_1",
                                      "mine_2", "dpo_2", "eval_2", "merge", "report"]
    assert pipeline.step_names(1, forgetting=True) == ["model", "sft", "eval_before", "bfcl_before", "mine_1",
                                                       "dpo_1", "eval_1", "bfcl_1", "merge", "report"]


def test_the_command_line_wins_over_a_step_override(make_cfg, tmp_path):
    cfg = make_cfg("dpo.beta=0.2", "dpo.trl={}", step_override("dpo", "dpo.beta=0.5", "dpo.learning_rate=0.25",
                                                               "dpo.trl.ld_alpha=0.5"))
    cli = {"dpo.beta", "dpo.trl"}
    dpo_cfg = step_config.build_step_cfg(cfg, tmp_path, "dpo_1", "dpo", cli_keys=cli)
    assert dpo_cfg.dpo.beta == 0.2  # given on the command line: the step override does not replace it
    assert dpo_cfg.dpo.learning_rate == 0.25 and dpo_cfg.dpo.trl == {}
    assert step_config.build_step_cfg(cfg, tmp_path, "dpo_1", "dpo", cli_keys=set()).dpo.beta == 0.5


def recipe_keys() -> dict:
    """Every leaf key the default recipe (conf/stage/pipeline.yaml) sets, with its value."""
    from omegaconf import OmegaConf

    from polaris_dpo import paths

    recipe = OmegaConf.to_container(OmegaConf.load(Path(paths.CONF_DIR) / "stage" / "pipeline.yaml"))
    recipe["pipeline"].pop("step_overrides")

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(leaves(recipe))


def other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return value[:1]
    if value is None:
        return 7
    return {"group_by_length": "padding_free"}.get(value, "eval")


def command_line_value(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(command_line_value(v) for v in value) + "]"
    return {True: "true", False: "false", None: "null"}.get(value, str(value)) if not isinstance(value, (int, float)) \
        or isinstance(value, bool) else str(value)


def test_the_default_recipe_is_real_keys_each_overridable_on_the_command_line():
    from omegaconf import OmegaConf

    from polaris_dpo.compose import compose

    keys = recipe_keys()
    assert {"sft.learning_rate", "dpo.beta", "eval.samples_per_prompt", "mine.max_prompts"} <= set(keys)
    default = compose([])
    for key, value in keys.items():
        assert OmegaConf.select(default, key) == value, key
        new = other_value(value)
        cfg = compose([f"{key}={command_line_value(new)}"])
        assert OmegaConf.select(cfg, key) == new, key
    step_keys = {o.partition("=")[0] for overrides in default.pipeline.step_overrides.values() for o in overrides}
    assert step_keys == {"model.dtype"}  # the only setting a step changes; the command line wins there too
    cfg = compose(["model.dtype=float32"])
    sub = step_config.build_step_cfg(cfg, Path("/tmp"), "eval_before", "eval", cli_keys={"model.dtype"})
    assert sub.model.dtype == "float32"


def test_the_gpu_recipe_sets_every_key_of_the_cpu_recipe():
    """experiment=polaris_small comes after the default job's recipe: a key it left out would leak in."""
    from omegaconf import OmegaConf

    from polaris_dpo import paths

    gpu = OmegaConf.load(Path(paths.CONF_DIR) / "experiment" / "polaris_small.yaml")
    missing = [key for key in recipe_keys() if key != "stage.name" and OmegaConf.select(gpu, key, default="-") == "-"]
    assert not missing


def test_the_forgetting_check_scores_the_bundled_bfcl_greedily(make_cfg, tmp_path):
    from polaris_dpo import readers

    cfg = make_cfg("eval.temperature=0.9", "eval.samples_per_prompt=5")
    sub = step_config.build_step_cfg(cfg, tmp_path, "bfcl_before", "eval", cli_keys=set(),
                                  **pipeline.forgetting_wiring(cfg, "model-dir"))
    assert sub.eval.temperature == 0.0 and sub.eval.samples_per_prompt == 1 and sub.eval.model_path == "model-dir"
    conversations, counts = readers.read_all(sub.data, tmp_path)
    assert counts["quarantined"] == 0 and counts["kept"] == len(conversations) == 120
    assert {c["source"] for c in conversations} == {"BFCL_v4_simple_python", "BFCL_v4_live_simple",
                                                    "BFCL_v4_irrelevance"}


def test_step_overrides_reach_only_their_stage(make_cfg, tmp_path):
    cfg = make_cfg(step_override("sft", "sft.learning_rate=0.5", "train.finetune=full",
                                 "sft.trl.packing_strategy=wrapped"))
    sft_cfg = step_config.step_cfg(cfg, tmp_path, "sft", "sft")
    eval_cfg = step_config.step_cfg(cfg, tmp_path, "eval_before", "eval", **{"eval.model_path": "x"})
    assert sft_cfg.sft.learning_rate == 0.5 and sft_cfg.train.finetune == "full"
    assert sft_cfg.sft.trl == {**cfg.sft.trl, "packing_strategy": "wrapped"} and eval_cfg.sft.trl == cfg.sft.trl
    with pytest.raises(Exception, match="learning_rat"):  # a typo outside the pass-through sections is an error
        step_config.step_cfg(make_cfg(step_override("sft", "sft.learning_rat=0.5")), tmp_path, "sft", "sft")
    assert eval_cfg.train.finetune == cfg.train.finetune and eval_cfg.eval.model_path == "x"
    assert sft_cfg.run_dir == str(tmp_path / "sft")


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_resumes(make_cfg, tmp_path, caplog):
    run_dir = tmp_path / "run"
    summary = pipeline.run(make_cfg(*TINY_RUN, run_dir=run_dir))

    on_disk = json.loads((run_dir / pipeline.SUMMARY_FILE).read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for side, eval_dir in (("before", "eval_before"), ("after", "eval_1")):
        metrics = json.loads((run_dir / eval_dir / "metrics.json").read_text())
        assert set(summary[side]) == set(CATEGORIES)
        for category in CATEGORIES:
            assert summary[side][category] == pytest.approx(metrics["categories"][category]["rate"])
        assert summary["samples"][side] == metrics["n"] == 4 * 2
        assert sum(summary[side].values()) == pytest.approx(1.0)
    assert summary["rounds"][0]["rates"] == summary["after"]
    assert set(summary["step_wall_s"]) == {"model", "sft", "eval_before", "bfcl_before", "mine_1", "dpo_1", "eval_1",
                                           "bfcl_1", "merge"}
    forgetting = summary["forgetting"]
    assert forgetting["questions"] == 3 and 0 <= forgetting["before"] <= 1 and 0 <= forgetting["after"] <= 1
    assert "Forgetting check: BFCL" in Path(summary["paths"]["report"]).read_text()
    assert all(t >= 0 for t in summary["step_wall_s"].values())
    paths = summary["paths"]
    assert Path(paths["report"]).is_file() and Path(paths["chart"]).stat().st_size > 0
    assert (Path(paths["pairs"]) / "train.jsonl").is_file()
    assert (Path(paths["merged_model"]) / "config.json").is_file()
    report = Path(paths["report"]).read_text()
    assert "`missed_call`" in report and "failure_rates.png" in report

    # a second run in the same folder finds every step done and only rewrites the report
    state_before = json.loads((run_dir / pipeline.STATE_FILE).read_text())
    caplog.set_level("INFO", logger="polaris_dpo.stages.pipeline")
    again = pipeline.run(make_cfg(*TINY_RUN, run_dir=run_dir))
    assert again["before"] == summary["before"] and again["after"] == summary["after"]
    skipped = [r.getMessage() for r in caplog.records if "done in an earlier run" in r.getMessage()]
    assert len(skipped) == 9
    state_after = json.loads((run_dir / pipeline.STATE_FILE).read_text())
    assert state_after["steps"]["sft"] == state_before["steps"]["sft"]


def test_failing_step_is_named_and_resumable(make_cfg, tmp_path, monkeypatch):
    from polaris_dpo.stages import sft

    def broken(cfg, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sft, "run", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(pipeline.StepFailed) as err:
        pipeline.run(make_cfg("wandb.mode=disabled", run_dir=run_dir))
    message = str(err.value)
    assert "'sft'" in message and "disk full" in message and f"hydra.run.dir={run_dir}" in message
    state = json.loads((run_dir / pipeline.STATE_FILE).read_text())
    assert state["steps"]["model"]["status"] == "done"
    assert state["steps"]["sft"]["status"] == "failed" and "disk full" in state["steps"]["sft"]["error"]


def test_the_resume_command_repeats_the_runs_overrides_without_credentials(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    task = ["seed=1", "pipeline.step_overrides.dpo=[dpo.beta=0.3]", "+sft.trl.hub_token=hf_secret", "hydra.run.dir=x"]
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: SimpleNamespace(overrides=SimpleNamespace(task=task))))
    command = pipeline.resume_command(tmp_path / "run dir")
    assert command == ("python -m polaris_dpo seed=1 'pipeline.step_overrides.dpo=[dpo.beta=0.3]' "
                       f"'+sft.trl.hub_token=<redacted>' 'hydra.run.dir={tmp_path}/run dir'")
