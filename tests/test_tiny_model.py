"""The tiny local model: built from bundled text, cached, reloaded with from_pretrained, runs forward."""

from __future__ import annotations

import torch

from polaris_dpo import models

TOKENS = ["<|im_start|>", "<|im_end|>", "<|fn_start|>", "<|fn_end|>"]


def test_build_reload_forward(make_cfg, tiny_cache):
    cfg = make_cfg()
    path = models.resolve_model_path(cfg.model, TOKENS)
    assert path.startswith(str(tiny_cache))
    stamp = (models.Path(path) / "config.json").stat().st_mtime_ns
    assert models.resolve_model_path(cfg.model, TOKENS) == path  # cached: not rebuilt
    assert (models.Path(path) / "config.json").stat().st_mtime_ns == stamp

    tokenizer = models.load_tokenizer(path)
    assert tokenizer.padding_side == "left"
    for token in TOKENS:  # each special token is one id, never split
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1
    model = models.load_model(path, cfg.model, cfg.hardware, tokenizer)
    batch = tokenizer(['<|im_start|>user\nWeather in "Paris"?<|im_end|>', "hi"], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape[:2] == batch.input_ids.shape
    assert logits.shape[-1] == len(tokenizer)
    assert torch.isfinite(logits).all()


def test_different_special_tokens_give_a_different_model(make_cfg):
    cfg = make_cfg()
    assert models.resolve_model_path(cfg.model, TOKENS) != models.resolve_model_path(cfg.model, TOKENS[:2])


def test_tokenizer_roundtrips_text_exactly(make_cfg):
    cfg = make_cfg()
    tokenizer = models.load_tokenizer(models.resolve_model_path(cfg.model, TOKENS))
    text = 'Answer: 42 — {"city": "Zürich", "emoji": "🙂"}\n\tdone'
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text


def test_missing_format_tokens_are_added_and_embeddings_resized(make_cfg):
    cfg = make_cfg()
    path = models.resolve_model_path(cfg.model, TOKENS[:2])

    class Fmt:
        special_tokens = TOKENS
        chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        response_template = {"version": 1, "defaults": {"role": "assistant"}, "fields": {"content": {"content": "text"}}}

    tokenizer = models.load_tokenizer(path, Fmt())
    assert "<|fn_start|>" in tokenizer.get_vocab()
    assert tokenizer.chat_template == Fmt.chat_template
    assert tokenizer.response_template == Fmt.response_template
    model = models.load_model(path, cfg.model, cfg.hardware, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_load_in_4bit_on_cpu(make_cfg):
    import bitsandbytes as bnb

    cfg = make_cfg("model.load_in_4bit=true")
    path = models.resolve_model_path(cfg.model, TOKENS)
    tokenizer = models.load_tokenizer(path)
    model = models.load_model(path, cfg.model, cfg.hardware, tokenizer)
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears and all(m.support_avx512bf16_for_cpu is False for m in linears)
    out = model(**tokenizer(["hello world"], return_tensors="pt")).logits
    assert torch.isfinite(out).all()
