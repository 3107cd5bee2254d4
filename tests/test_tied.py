"""A tied-embedding model (the SmolLM2 / Qwen2.5-0.5B / Llama-3.2 case) with the format's new tokens:
LoRA SFT and DPO train without crashing in TRL's fused LM head, the new tokens' rows learn on both sides of
the tie, the adapters reload at the right vocabulary size, and the merge reproduces the adapter model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_sft import QUICK, TINY, conversations, use_test_format, write_pairs

from polaris_dpo import merging, models, training
from polaris_dpo.merging import MergeSettings
from polaris_dpo.stages import dpo, sft

TIED = (*TINY, "model.tiny.tie_word_embeddings=true")
ROWS = "train.lora.new_tokens=rows"  # only the new tokens' rows train (the default trains the whole head)


@pytest.fixture
def tied_sft(make_cfg, monkeypatch, tmp_path):
    fmt = use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TIED, ROWS, *QUICK, "sft.max_steps=10", "sft.learning_rate=1e-2",
                   "sft.per_device_train_batch_size=4", run_dir=tmp_path / "sft_run")
    result = sft.run(cfg, conversations=conversations(8))
    return cfg, fmt, result


def token_ids(fmt, folder) -> torch.Tensor:
    return torch.tensor(models.load_tokenizer(str(folder), fmt).convert_tokens_to_ids(fmt.special_tokens))


@pytest.mark.slow
def test_tied_lora_sft_trains_the_new_tokens_rows_on_both_sides(tied_sft):
    cfg, fmt, result = tied_sft
    metrics = result["metrics"]
    assert metrics["final_loss"] < 0.95 * metrics["first_loss"], metrics

    base, tokenizer = models.load_trained(result["base_model"], cfg, fmt)
    assert training.has_tied_head(base)
    model, _ = models.load_trained(result["output_dir"], cfg, fmt)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    ids, other = token_ids(fmt, result["output_dir"]), torch.tensor([5, 6, 7])
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    base_rows = base.get_input_embeddings().weight
    assert not torch.allclose(embed(ids), base_rows[ids])  # input rows learned
    assert not torch.allclose(head.weight[ids], base_rows[ids])  # and, tied, the head's rows with them
    assert torch.equal(head.weight[ids], embed(ids))
    assert torch.equal(embed(other), base_rows[other]) and torch.equal(head.weight[other], base_rows[other])
    config = json.loads((Path(result["output_dir"]) / "adapter_config.json").read_text())
    assert not config.get("modules_to_save")  # a tied head is not trained whole


@pytest.mark.slow
def test_tied_lora_dpo_continues_the_sft_adapter_and_merges(tied_sft, make_cfg, tmp_path):
    cfg, fmt, sft_result = tied_sft
    pairs = write_pairs(tmp_path / "pairs")
    dpo_cfg = make_cfg("stage=dpo", *TIED, ROWS, *QUICK, "dpo.max_steps=6", "dpo.learning_rate=5e-3", "dpo.beta=0.5",
                       "dpo.per_device_train_batch_size=4", f"dpo.pairs={pairs}",
                       f"dpo.sft_model={sft_result['output_dir']}", run_dir=tmp_path / "dpo_run")
    result = dpo.run(dpo_cfg)
    history = json.loads((tmp_path / "dpo_run" / "dpo" / "checkpoints" / "checkpoint-6" / "trainer_state.json")
                         .read_text())["log_history"]
    margins = [e["rewards/margins"] for e in history if "rewards/margins" in e]
    assert len(margins) == 6 and margins[-1] > margins[0] and margins[-1] > 0, margins

    sft_model, _ = models.load_trained(sft_result["output_dir"], cfg, fmt)
    dpo_model, tokenizer = models.load_trained(result["output_dir"], cfg, fmt)
    ids = token_ids(fmt, result["output_dir"])
    assert not torch.allclose(dpo_model.get_input_embeddings()(ids), sft_model.get_input_embeddings()(ids))

    chain = merging.chain_from_stage_output(result["output_dir"])
    out = tmp_path / "merged"
    from test_merge_helpers import EXAMPLES

    verified = merging.merge_and_verify(chain, out, EXAMPLES, cfg.model, cfg.hardware, MergeSettings())
    assert verified["passed"] and verified["full_precision_reference"]["max_abs_diff"] < 1e-4
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert merged.config.tie_word_embeddings and training.has_tied_head(merged)
    text = tokenizer.apply_chat_template(EXAMPLES[0]["prompt"], add_generation_prompt=True, tokenize=False)
    batch = tokenizer(text + "<tool_call>", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, dpo_model.eval()(**batch).logits, atol=1e-4)


def test_fused_head_reads_the_rows_its_forward_uses(make_cfg, monkeypatch):
    """With the adapter off (the DPO reference of a fresh adapter) the head's weight is the base's."""
    from peft import get_peft_model

    fmt = use_test_format(monkeypatch)
    cfg = make_cfg(*TIED, ROWS, *QUICK)
    path = models.model_path_for(cfg, fmt)
    tokenizer = models.load_tokenizer(path, fmt)
    base = models.load_model(path, cfg.model, cfg.hardware, tokenizer)
    original = base.get_input_embeddings().weight.detach().clone()
    model = get_peft_model(base, training.lora_config(cfg, base, tokenizer, fmt))
    assert training.readable_head_rows(model) and not training.readable_head_rows(model)
    ids = token_ids(fmt, path)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "trainable_tokens_delta" in name:
                param.add_(1.0)
    head = model.get_output_embeddings()
    assert head.bias is None
    assert torch.allclose(head.weight[ids], original[ids] + 1.0)
    with model.disable_adapter():
        assert torch.equal(model.get_output_embeddings().weight, original)


@pytest.mark.slow
def test_tied_qlora_sft_trains_the_new_tokens_rows(make_cfg, monkeypatch, tmp_path):
    fmt = use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TIED, ROWS, *QUICK, "model.load_in_4bit=true", "sft.max_steps=4",
                   "sft.learning_rate=1e-2", "sft.per_device_train_batch_size=4")
    result = sft.run(cfg, conversations=conversations(8))
    assert result["metrics"]["final_loss"] < result["metrics"]["first_loss"]
    base, _ = models.load_trained(result["base_model"], cfg, fmt)
    model, _ = models.load_trained(result["output_dir"], cfg, fmt)
    ids = token_ids(fmt, result["output_dir"])
    assert not torch.allclose(model.get_input_embeddings()(ids).float(), base.get_input_embeddings()(ids).float())
    assert torch.equal(model.get_output_embeddings().weight[ids], model.get_input_embeddings()(ids))


def test_new_token_rows_start_from_the_text_they_stand_for(make_cfg, monkeypatch):
    fmt = use_test_format(monkeypatch)
    cfg = make_cfg(*TIED)
    path = models.resolve_model_path(cfg.model, [])  # a base that lacks the format's tokens
    plain = models.load_model(path, cfg.model, cfg.hardware)
    known = plain.get_input_embeddings().weight.shape[0]
    tokenizer = models.load_tokenizer(path, fmt)
    model = models.load_model(path, cfg.model, cfg.hardware, tokenizer)
    assert len(tokenizer) > known
    rows = model.get_input_embeddings().weight
    token = tokenizer.convert_tokens_to_ids("<tool_call>")
    pieces = tokenizer(" tool call", add_special_tokens=False).input_ids
    assert models.token_text("<tool_call>") == "tool call" and models.token_text("<|fn_start|>") == "function start"
    assert torch.allclose(rows[token], plain.get_input_embeddings().weight[pieces].mean(dim=0))
    assert torch.equal(model.get_output_embeddings().weight[token], rows[token])  # tied: the head row with it
    assert torch.equal(rows[:known], plain.get_input_embeddings().weight)


@pytest.mark.slow
def test_tied_dpo_with_a_fresh_adapter_and_precomputed_reference(tied_sft, make_cfg, tmp_path):
    """The reference log-probs are computed in TRL's constructor: the head must be readable before it."""
    _, _, sft_result = tied_sft
    pairs = write_pairs(tmp_path / "pairs")
    cfg = make_cfg("stage=dpo", *TIED, ROWS, *QUICK, "dpo.max_steps=2", "dpo.learning_rate=5e-3",
                   "dpo.per_device_train_batch_size=4", f"dpo.pairs={pairs}", "dpo.reference=merge_sft",
                   "dpo.precompute_ref_log_probs=true", f"dpo.sft_model={sft_result['output_dir']}",
                   run_dir=tmp_path / "dpo_fresh")
    result = dpo.run(cfg)
    assert "fresh adapter" in result["reference"] and result["metrics"]["global_step"] == 2


@pytest.mark.slow
def test_tied_whole_head_trains_the_shared_matrix_and_merges(make_cfg, monkeypatch, tmp_path):
    """train.lora.new_tokens=head with a tied head: the whole shared matrix trains in SFT and DPO, stays tied,
    and merges."""
    fmt = use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TIED, *QUICK, "sft.max_steps=6", "sft.learning_rate=1e-2",
                   "sft.per_device_train_batch_size=4", run_dir=tmp_path / "sft_run")
    assert cfg.train.lora.new_tokens == "head"  # the default
    result = sft.run(cfg, conversations=conversations(8))
    config = json.loads((Path(result["output_dir"]) / "adapter_config.json").read_text())
    assert "embed_tokens" in config["modules_to_save"] and not config["trainable_token_indices"]

    base, _ = models.load_trained(result["base_model"], cfg, fmt)
    model, tokenizer = models.load_trained(result["output_dir"], cfg, fmt)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    ordinary = torch.tensor([5, 6, 7])
    assert not torch.equal(embed(ordinary), base.get_input_embeddings()(ordinary))  # beyond the new tokens' rows
    assert torch.equal(head.weight, embed.weight)

    pairs = write_pairs(tmp_path / "pairs")
    dpo_cfg = make_cfg("stage=dpo", *TIED, *QUICK, "dpo.max_steps=3", "dpo.learning_rate=5e-3", "dpo.beta=0.5",
                       "dpo.per_device_train_batch_size=4", f"dpo.pairs={pairs}",
                       f"dpo.sft_model={result['output_dir']}", run_dir=tmp_path / "dpo_run")
    dpo_result = dpo.run(dpo_cfg)
    dpo_model, _ = models.load_trained(dpo_result["output_dir"], cfg, fmt)
    assert not torch.equal(dpo_model.get_input_embeddings()(ordinary), embed(ordinary))  # DPO moved the matrix too
    assert torch.equal(dpo_model.get_output_embeddings().weight, dpo_model.get_input_embeddings().weight)

    out = tmp_path / "merged"
    from test_merge_helpers import EXAMPLES

    chain = merging.chain_from_stage_output(dpo_result["output_dir"])
    verified = merging.merge_and_verify(chain, out, EXAMPLES, cfg.model, cfg.hardware, MergeSettings())
    assert verified["passed"] and verified["full_precision_reference"]["max_abs_diff"] < 1e-4
