"""QLoRA on CPU: 4-bit NF4 base, gradients exact after an eval-mode forward, and a short SFT run."""

from __future__ import annotations

import json

import torch
from test_sft import QUICK, TINY, conversations, use_test_format

from polaris_dpo import models, training

QLORA = ("model.load_in_4bit=true", "train.lora.dropout=0")


def lora_grads(model, batch) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}


def test_qlora_gradients_match_full_precision_after_eval_forward(make_cfg, monkeypatch):
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf
    from peft import get_peft_model

    fmt = use_test_format(monkeypatch)
    cfg = make_cfg(*TINY, *QLORA)
    path = models.model_path_for(cfg, fmt)
    tokenizer = models.load_tokenizer(path, fmt)
    quantised = training.prepare_for_kbit(cfg, models.load_model(path, cfg.model, cfg.hardware, tokenizer))
    linear4 = {n: m for n, m in quantised.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert linear4 and all(not m.support_avx512bf16_for_cpu for m in linear4.values())

    full_cfg = make_cfg(*TINY, "train.lora.dropout=0")
    full = models.load_model(path, full_cfg.model, full_cfg.hardware, tokenizer)
    for name, module in linear4.items():  # the same weights, dequantised
        full.get_submodule(name).weight.data.copy_(bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state))

    torch.manual_seed(0)
    q_peft = get_peft_model(quantised, training.lora_config(cfg, quantised, tokenizer, fmt))
    f_peft = get_peft_model(full, training.lora_config(full_cfg, full, tokenizer, fmt))
    f_params = dict(f_peft.named_parameters())
    for name, param in q_peft.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)  # B starts at zero: make A's gradients non-zero too
        if param.requires_grad:
            f_params[name].data.copy_(param.data.float())

    batch = tokenizer(["What is the weather in Paris? <tool_call>", "It is 10 degrees in Oslo."],
                      return_tensors="pt", padding=True)
    q_peft.eval()
    with torch.no_grad():
        q_peft(**batch)  # the eval-mode forward that, unguarded, repacks the weights and spoils every gradient
    q_peft.train()
    f_peft.train()
    q_grads, f_grads = lora_grads(q_peft, batch), lora_grads(f_peft, batch)
    assert len(q_grads) == len(f_grads) > 0
    for name, grad in q_grads.items():
        reference = f_grads[name]
        error = (grad.float() - reference).norm() / reference.norm()
        assert error < 1e-3, (name, float(error))


def test_qlora_sft_run_trains_adapter(make_cfg, monkeypatch, tmp_path):
    from polaris_dpo.stages import sft

    use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TINY, *QUICK, *QLORA, "sft.max_steps=4", "sft.learning_rate=1e-2",
                   "sft.per_device_train_batch_size=4")
    result = sft.run(cfg, conversations=conversations(8))
    record = json.loads((tmp_path / "run" / "sft" / "training.json").read_text())
    assert record["load_in_4bit"] is True and record["base_model"] == result["base_model"]
    assert result["metrics"]["final_loss"] < result["metrics"]["first_loss"]
    from safetensors.torch import load_file
    tensors = load_file(str(tmp_path / "run" / "sft" / "adapter_model.safetensors"))
    assert all(v.abs().sum() > 0 for k, v in tensors.items() if "lora_B" in k)
