"""A model folder carries its format: after `stage=sft format=functionary`, DPO, eval, mining and merge on
that output, run from another folder, render in functionary without `format=` repeated; a contradicting `format=` is an error naming both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sft import QUICK, TINY, conversations, write_pairs

from polaris_dpo import training
from polaris_dpo.stages import dpo, eval, mine, sft
from polaris_dpo.stages import merge as merge_stage


@pytest.fixture
def functionary_sft(make_cfg, tmp_path):
    cfg = make_cfg("stage=sft", "format=functionary", *TINY, *QUICK, "sft.max_steps=2",
                   "sft.per_device_train_batch_size=4", run_dir=tmp_path / "sft_run")
    return sft.run(cfg, conversations=conversations(8))["output_dir"]


@pytest.mark.slow
def test_later_stages_read_the_format_from_the_sft_output(functionary_sft, make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # from a folder other than the repo
    pairs = write_pairs(tmp_path / "pairs", n=4)
    dpo_cfg = make_cfg("stage=dpo", *TINY, *QUICK, "dpo.max_steps=1", "dpo.per_device_train_batch_size=2",
                       f"dpo.pairs={pairs}", f"dpo.sft_model={functionary_sft}", run_dir=tmp_path / "dpo_run")
    assert dpo_cfg.format.name == "polaris"  # not repeated on the command line
    result = dpo.run(dpo_cfg)
    record = json.loads((tmp_path / "dpo_run" / "dpo" / "training.json").read_text())
    assert record["format"]["name"] == "functionary"

    eval_cfg = make_cfg("stage=eval", *TINY, f"eval.model_path={result['output_dir']}", "eval.max_prompts=2",
                        "eval.samples_per_prompt=1", "eval.max_new_tokens=4", run_dir=tmp_path / "eval_run")
    metrics = eval.run(eval_cfg)["metrics"]
    assert metrics["n"] == 2

    mine_cfg = make_cfg("stage=mine", *TINY, f"mine.model_path={result['output_dir']}", "mine.max_prompts=2",
                        "mine.samples_per_prompt=1", "mine.max_new_tokens=4", f"mine.pairs_dir={tmp_path}/mined",
                        run_dir=tmp_path / "mine_run")
    assert Path(mine.run(mine_cfg)["pairs"]).is_dir()

    merge_cfg = make_cfg("stage=merge", *TINY, f"merge.source={tmp_path / 'dpo_run'}", "merge.verify_prompts=1",
                         run_dir=tmp_path / "merge_run")
    merged = merge_stage.run(merge_cfg)
    assert merged["passed"]
    from transformers import AutoTokenizer

    assert "<|from|>" in AutoTokenizer.from_pretrained(tmp_path / "merge_run" / "merged").chat_template  # functionary


def test_a_contradicting_format_on_the_command_line_names_both(make_cfg, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "training.json").write_text(json.dumps({"format": {"name": "functionary", "version": "v2"}}))
    cfg = make_cfg("format=chatml_tools")
    assert training.load_format(cfg, str(folder)).name == "functionary"  # format= not given by the user here
    monkeypatch.setattr(training, "format_set_on_command_line", lambda: True)
    with pytest.raises(ValueError, match=r"trained with format .*functionary.*format\.name='chatml_tools'"):
        training.load_format(cfg, str(folder))


@pytest.mark.slow
@pytest.mark.parametrize("in_4bit", [False, True], ids=["full-precision", "4-bit"])
def test_a_merge_sft_dpo_output_evaluates_and_merges_as_the_model_it_trained(make_cfg, tmp_path, in_4bit):
    """After `dpo.reference=merge_sft` the DPO adapter sits on the base with the SFT adapter folded in: eval (and
    mining) load that model from training.json, not the base named in adapter_config.json (the raw base, or the
    4-bit staging folder the stage deletes)."""
    import torch
    from transformers import AutoModelForCausalLM

    from polaris_dpo import models

    quant = ["model.load_in_4bit=true"] if in_4bit else []
    sft_cfg = make_cfg("stage=sft", *TINY, *QUICK, *quant, "sft.max_steps=3", "sft.learning_rate=1e-2",
                       "sft.per_device_train_batch_size=4", run_dir=tmp_path / "sft_run")
    sft_out = sft.run(sft_cfg, conversations=conversations(8))["output_dir"]
    pairs = write_pairs(tmp_path / "pairs", n=4)
    dpo_cfg = make_cfg("stage=dpo", *TINY, *QUICK, *quant, "dpo.reference=merge_sft", "dpo.max_steps=1",
                       "dpo.per_device_train_batch_size=2", f"dpo.pairs={pairs}", f"dpo.sft_model={sft_out}",
                       run_dir=tmp_path / "dpo_run")
    dpo_out = dpo.run(dpo_cfg)["output_dir"]

    eval_cfg = make_cfg("stage=eval", *TINY, *quant, f"eval.model_path={dpo_out}", "eval.max_prompts=2",
                        "eval.samples_per_prompt=1", "eval.max_new_tokens=4", run_dir=tmp_path / "eval_run")
    assert eval.run(eval_cfg)["metrics"]["n"] == 2
    merge_cfg = make_cfg("stage=merge", *TINY, *quant, f"merge.source={dpo_out}", "merge.verify_prompts=1",
                         run_dir=tmp_path / "merge_run")
    assert merge_stage.run(merge_cfg)["passed"]
    if in_4bit:
        return  # a 4-bit load differs from the full-precision merge by design

    loaded, tokenizer = models.load_trained(dpo_out, eval_cfg, training.load_format(eval_cfg, dpo_out),
                                            merge_adapter=True)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merge_run" / "merged", dtype=torch.float32)
    ids = tokenizer("What is the weather in Paris?", return_tensors="pt").input_ids
    with torch.no_grad():
        difference = (loaded.eval()(input_ids=ids).logits - merged.eval()(input_ids=ids).logits).abs().max()
    assert difference < 1e-3, f"eval's model is not base + SFT + DPO (max |logit diff| {difference:.3g})"
