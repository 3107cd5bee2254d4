"""Stage merge: the adapter chain folded into a full-precision base, saved, reloaded and checked."""

from __future__ import annotations

import json

import pytest
import torch
from test_merge_helpers import EXAMPLES, build_chain
from transformers import AutoModelForCausalLM, AutoTokenizer

from polaris_dpo import merging
from polaris_dpo.stages import merge as merge_stage


def _merge(cfg, chain, out, **settings):
    return merging.merge_and_verify(chain, out, EXAMPLES, cfg.model, cfg.hardware,
                                    merging.MergeSettings(**settings))


def _independent_reference_logits(cfg, built, text):
    """Base + SFT folded + DPO adapter live, built here with peft directly (not through merging.fold)."""
    from peft import PeftModel

    from polaris_dpo import models

    base = models.load_model(built["base"], cfg.model, cfg.hardware, built["tokenizer"])
    model = PeftModel.from_pretrained(base, str(built["sft"])).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(built["dpo"])).eval()
    ids = built["tokenizer"](text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_sft_dpo_chain_with_added_tokens_merges_within_1e4(make_cfg, tmp_path):
    cfg = make_cfg()
    built = build_chain(cfg, tmp_path / "run")
    chain = merging.chain_for_run(tmp_path / "run")
    assert [p.name for p in chain.adapters] == ["sft", "dpo"]

    out = tmp_path / "run" / "merged"
    result = _merge(cfg, chain, out)
    assert result["passed"] and result["full_precision_reference"]["max_abs_diff"] < 1e-4
    record = json.loads((out / "verification.json").read_text())
    assert record["full_precision_reference"]["max_abs_diff"] == result["full_precision_reference"]["max_abs_diff"]
    assert record["four_bit_reference"] is None and record["prompts"] == len(EXAMPLES)
    assert not list(tmp_path.joinpath("run").glob(".merged*"))  # no staging left behind

    # the merged folder is a plain model: Auto classes, no peft, safetensors, template and added tokens kept
    assert list(out.glob("*.safetensors")) and not list(out.glob("adapter_*"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert tokenizer.chat_template == built["tokenizer"].chat_template
    assert tokenizer.convert_tokens_to_ids(["<|fn_start|>", "<|fn_end|>"]) == built["added_ids"]
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)

    # the added rows are the adapter's, not fresh random ones, and the model differs from the base
    text = tokenizer.apply_chat_template(EXAMPLES[0]["prompt"], add_generation_prompt=True, tokenize=False)
    text += '<|fn_start|>{"name": "get_weather"}<|fn_end|>'
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        merged_logits = model(input_ids=ids).logits
    reference = _independent_reference_logits(cfg, built, text)
    assert (merged_logits - reference).abs().max() < 1e-4
    base = AutoModelForCausalLM.from_pretrained(built["base"], dtype=torch.float32).eval()
    base_ids = ids.clone()
    base_ids[base_ids >= base.config.vocab_size] = 0
    with torch.no_grad():
        assert (base(input_ids=base_ids).logits - merged_logits[..., : base.config.vocab_size]).abs().max() > 1e-2

    generated = model.generate(input_ids=ids[:, :12], max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > 12


def test_bfloat16_merge_uses_its_own_tolerance(make_cfg, tmp_path):
    cfg = make_cfg()
    build_chain(cfg, tmp_path / "run")
    result = _merge(cfg, merging.chain_for_run(tmp_path / "run"), tmp_path / "merged", dtype="bfloat16")
    assert result["tolerance"] == merging.DEFAULT_TOLERANCE["bfloat16"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert model.dtype == torch.bfloat16


def test_a_merge_over_the_tolerance_fails_and_keeps_the_evidence(make_cfg, tmp_path):
    cfg = make_cfg()
    build_chain(cfg, tmp_path / "run")
    chain = merging.chain_for_run(tmp_path / "run")
    with pytest.raises(merging.MergeError, match="exceeds merge.tolerance"):
        _merge(cfg, chain, tmp_path / "merged", tolerance=0.0, dtype="bfloat16")
    assert not (tmp_path / "merged").exists()
    record = json.loads((tmp_path / "merged.failed" / "verification.json").read_text())
    assert record["passed"] is False and record["failures"]


def test_a_4bit_trained_run_merges_through_the_full_precision_base(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("model.load_in_4bit=true")
    build_chain(make_cfg(), tmp_path / "run", load_in_4bit=True)
    chain = merging.chain_for_run(tmp_path / "run")
    assert chain.load_in_4bit

    loads = []
    real_load = merging.load_base

    def spy(chain, model_cfg, hardware_cfg, tokenizer, dtype, in_4bit=False):
        model = real_load(chain, model_cfg, hardware_cfg, tokenizer, dtype, in_4bit)
        loads.append((in_4bit, any("4bit" in type(m).__name__ for m in model.modules())))
        return model

    monkeypatch.setattr(merging, "load_base", spy)
    result = _merge(cfg, chain, tmp_path / "merged")
    # the merge and the reference that the tolerance applies to are full precision; the 4-bit one is extra
    assert loads == [(False, False), (False, False), (True, True)]
    assert result["passed"] and result["full_precision_reference"]["max_abs_diff"] < 1e-4
    four_bit = result["four_bit_reference"]["max_abs_diff"]
    assert four_bit > result["full_precision_reference"]["max_abs_diff"]
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config


def test_added_rows_missing_from_the_adapters_are_refused(make_cfg, tmp_path):
    cfg = make_cfg()
    build_chain(cfg, tmp_path / "run", head_rows=False)
    with pytest.raises(merging.MergeError, match="lm_head"):
        _merge(cfg, merging.chain_for_run(tmp_path / "run"), tmp_path / "merged")


def test_chain_errors_name_the_file(tmp_path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "training.json").write_text('{"stage": "sft", "adapter_chain": []}')
    with pytest.raises(merging.MergeError, match=r"training.json: missing field 'base_model'"):
        merging.chain_for_run(tmp_path)
    with pytest.raises(merging.MergeError, match="not a stage output"):
        merging.chain_for_run(tmp_path / "nothing")


def test_stage_merges_the_run_and_reports_the_call_check(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    build_chain(make_cfg(), run_dir)
    cfg = make_cfg("stage=merge", "merge.verify_prompts=3", "merge.verify_max_new_tokens=16", run_dir=run_dir)
    result = merge_stage.run(cfg)
    record = json.loads((run_dir / "merged" / "verification.json").read_text())
    assert record["passed"] and record["prompts"] == 3
    assert record["source"]["adapters"] == [str(run_dir / "sft"), str(run_dir / "dpo")]
    generation = record["generation"]
    # held-out demo prompts include a call; the random tiny model does not write one: reported, not fatal
    assert generation["checked"] and generation["expected_functions"]
    assert generation["parsed"] is False
    assert result["merged_dir"] == str(run_dir / "merged")

    cfg = make_cfg("stage=merge", "merge.verify_prompts=3", "merge.verify_max_new_tokens=16",
                   "merge.require_call=true", "merge.output=strict", run_dir=run_dir)
    with pytest.raises(merging.MergeError, match="require_call"):
        merge_stage.run(cfg)
    assert not (run_dir / "strict").exists() and (run_dir / "strict.failed" / "verification.json").is_file()


def test_merge_takes_a_stage_output_or_a_run_folder(tmp_path):
    def stage_output(folder):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "training.json").write_text(json.dumps({"base_model": "/base", "adapter_chain": [str(folder)]}))
        return folder

    pipeline = tmp_path / "pipeline"
    stage_output(pipeline / "sft" / "sft")
    newest = stage_output(pipeline / "dpo_2" / "dpo")
    stage_output(pipeline / "dpo_1" / "dpo")
    assert merging.chain_for_run(pipeline).adapters == [newest]
    assert merging.chain_for_run(newest).adapters == [newest]
    single = tmp_path / "stage_run"
    sft = stage_output(single / "sft")
    assert merging.chain_for_run(single).adapters == [sft]
    with pytest.raises(merging.MergeError, match="not a stage output"):
        merging.chain_for_run(tmp_path / "empty")
