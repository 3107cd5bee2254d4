"""Spectrum: SNR of known matrices, choice per module type, cache, and training only the chosen modules."""

from __future__ import annotations

import json

import pytest
import torch
from test_sft import QUICK, TINY, conversations, use_test_format

from polaris_dpo import models, spectrum


def test_low_rank_plus_noise_has_higher_snr_than_noise():
    torch.manual_seed(0)
    noise = torch.randn(128, 64)
    signal = 5 * torch.randn(128, 4) @ torch.randn(4, 64)
    snr_noise, _ = spectrum.snr(noise)
    snr_signal, _ = spectrum.snr(signal + noise)
    assert snr_signal > 2 * snr_noise


def test_choose_ranks_within_each_type():
    scores = {f"layers.{i}.{kind}": {"type": kind, "score": float(score)}
              for kind, order in (("q_proj", [3, 1, 2, 0]), ("down_proj", [0, 5, 1, 2]))
              for i, score in enumerate(order)}
    assert spectrum.choose(scores, 0.5) == ["layers.0.q_proj", "layers.1.down_proj", "layers.2.q_proj",
                                            "layers.3.down_proj"]
    with pytest.raises(ValueError, match="top_fraction"):
        spectrum.choose(scores, 1.5)


def test_spectrum_full_trains_only_chosen_modules(make_cfg, monkeypatch, tmp_path):
    from polaris_dpo.stages import sft

    fmt = use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TINY, *QUICK, "train.finetune=full", "train.spectrum.top_fraction=0.5",
                   f"train.spectrum.cache_dir={tmp_path / 'scans'}", "sft.max_steps=2", "sft.learning_rate=1e-3",
                   "sft.per_device_train_batch_size=4")
    result = sft.run(cfg, conversations=conversations(4))
    record = json.loads((tmp_path / "run" / "sft" / "spectrum.json").read_text())
    chosen = set(record["chosen"])
    assert len(chosen) == len(record["scores"]) // 2  # 2 layers x 7 types: one of two per type
    assert len(list((tmp_path / "scans").glob("*.json"))) == 1

    base, _ = models.load_trained(models.model_path_for(cfg, fmt), cfg, fmt)
    tuned, _ = models.load_trained(result["output_dir"], cfg, fmt)
    tuned_params = dict(tuned.named_parameters())
    for name, before in base.named_parameters():
        module = name.rsplit(".", 1)[0]
        should_train = module in chosen or "embed_tokens" in name or "lm_head" in name
        assert torch.equal(before, tuned_params[name]) != should_train, name


def test_spectrum_lora_targets_only_chosen(make_cfg, monkeypatch, tmp_path):
    from polaris_dpo import training

    fmt = use_test_format(monkeypatch)
    cfg = make_cfg(*TINY, "train.spectrum.top_fraction=0.25", "train.spectrum.apply=lora",
                   f"train.spectrum.cache_dir={tmp_path / 'scans'}")
    path = models.model_path_for(cfg, fmt)
    tokenizer = models.load_tokenizer(path, fmt)
    model = models.load_model(path, cfg.model, cfg.hardware, tokenizer)
    _, peft_config = training.new_trainable(cfg, model, tokenizer, fmt, tmp_path, path)
    chosen = json.loads((tmp_path / "spectrum.json").read_text())["chosen"]
    assert sorted(peft_config.target_modules) == sorted(chosen)


def test_turning_spectrum_on_works_with_every_other_default(make_cfg):
    from polaris_dpo import training

    assert training.spectrum_apply(make_cfg("train.spectrum.top_fraction=0.5")) == "lora"  # finetune=lora
    assert training.spectrum_apply(make_cfg("train.spectrum.top_fraction=0.5", "train.finetune=full")) == "full"
    with pytest.raises(ValueError, match="train.spectrum.apply=full needs train.finetune=full"):
        training.check_finetune(make_cfg("train.spectrum.top_fraction=0.5", "train.spectrum.apply=full"))
