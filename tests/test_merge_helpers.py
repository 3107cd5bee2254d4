"""A tiny SFT -> DPO adapter chain with added special tokens, built directly with peft (no training needed).

The base has the ChatML tokens; the call tokens are added afterwards, so the embeddings and the head are
resized and the new rows live only in the adapters (`trainable_token_indices`). The DPO adapter is made
on top of the SFT adapter folded in (dpo.reference=merge_sft), so the chain is [sft, dpo].
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from polaris_dpo import formats, merging, models

BASE_TOKENS = ["<|im_start|>", "<|im_end|>"]
ADDED_TOKENS = ["<|fn_start|>", "<|fn_end|>"]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
EXAMPLES = [
    {"id": "a#1", "prompt": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER_TOOL],
     "reference": {"role": "assistant", "content": None,
                   "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                    "arguments": {"city": "Paris"}}}]}},
    {"id": "b#1", "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
     "tools": [], "reference": {"role": "assistant", "content": "Hello!"}},
    {"id": "c#3", "prompt": [{"role": "user", "content": "And in Zürich?"},
                             {"role": "assistant", "content": None,
                              "tool_calls": [{"type": "function",
                                              "function": {"name": "get_weather", "arguments": {"city": "Bern"}}}]},
                             {"role": "tool", "name": "get_weather", "content": '{"temp": 3}'}],
     "tools": [WEATHER_TOOL], "reference": {"role": "assistant", "content": "It is 3 degrees."}},
]


def _perturb(model, seed: int) -> None:
    """Trained-looking adapters: every trainable tensor moved away from its initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)


def _write_record(folder: Path, stage: str, base: str, chain: list[Path], load_in_4bit: bool) -> None:
    record = {"stage": stage, "base_model": base, "adapter_chain": [str(p) for p in chain], "finetune": "lora",
              "load_in_4bit": load_in_4bit, "format": {"name": "polaris"}}
    (folder / "training.json").write_text(json.dumps(record))


def build_chain(cfg, run_dir: Path, load_in_4bit: bool = False, head_rows: bool = True) -> dict:
    """Write <run_dir>/sft and <run_dir>/dpo as the training stages would; returns paths and the added ids.

    head_rows=False: a broken run whose adapters carry the added rows of the input embedding only.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    base = models.resolve_model_path(cfg.model, BASE_TOKENS)
    tokenizer = models.load_tokenizer(base)
    tokenizer.add_tokens(ADDED_TOKENS, special_tokens=True)
    tokenizer.chat_template = formats.get("polaris").chat_template
    added = tokenizer.convert_tokens_to_ids(ADDED_TOKENS)

    def lora():
        rows = {"embed_tokens": added, "lm_head": added} if head_rows else {"embed_tokens": added}
        return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                          trainable_token_indices=rows)

    torch.manual_seed(1)
    model = models.load_model(base, cfg.model, cfg.hardware, tokenizer)
    sft = get_peft_model(model, lora())
    _perturb(sft, 1)
    sft_dir = run_dir / "sft"
    sft.save_pretrained(sft_dir, save_embedding_layers=head_rows)
    tokenizer.save_pretrained(sft_dir)
    _write_record(sft_dir, "sft", base, [sft_dir], load_in_4bit)

    torch.manual_seed(2)
    model = models.load_model(base, cfg.model, cfg.hardware, tokenizer)
    folded = PeftModel.from_pretrained(model, str(sft_dir)).merge_and_unload()
    dpo = get_peft_model(folded, lora())
    _perturb(dpo, 2)
    dpo_dir = run_dir / "dpo"
    dpo.save_pretrained(dpo_dir, save_embedding_layers=head_rows)
    tokenizer.save_pretrained(dpo_dir)
    _write_record(dpo_dir, "dpo", base, [sft_dir, dpo_dir], load_in_4bit)
    return {"base": base, "sft": sft_dir, "dpo": dpo_dir, "added_ids": added, "tokenizer": tokenizer}


def test_nan_logits_fail_verification_with_a_reason():
    clean = [torch.zeros(3, 5)]
    nan = [torch.zeros(3, 5)]
    nan[0][1, 2] = float("nan")
    assert merging.logit_failures(merging.compare_logits(clean, clean), 1e-4) == []
    reasons = merging.logit_failures(merging.compare_logits(clean, nan), 1e-4)
    assert reasons == ["the merged model's logits contain NaN or inf"]
    reasons = merging.logit_failures(merging.compare_logits(nan, clean), 1e-4)
    assert reasons == ["the base+adapters logits contain NaN or inf"]


def test_infinite_difference_and_over_tolerance_fail():
    big = torch.finfo(torch.float32).max
    huge = merging.compare_logits([torch.full((1, 2), big)], [torch.full((1, 2), -big)])
    assert merging.logit_failures(huge, 1e-4) == ["max |logit diff| against base+adapters is inf (not finite)"]
    off = merging.compare_logits([torch.zeros(1, 2)], [torch.ones(1, 2)])
    assert "exceeds merge.tolerance" in merging.logit_failures(off, 1e-4)[0]

