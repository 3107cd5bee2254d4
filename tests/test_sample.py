"""Sampling: per-prompt reproducibility, batch independence, stop at the format's end of turn, greedy."""

from __future__ import annotations

import contextlib
import os

import pytest

from polaris_dpo import models, sample

TOKENS = ["<|im_start|>", "<|im_end|>"]


class ChatML:
    """The smallest format `generate` needs: render with a generation prompt, an end-of-turn token."""

    special_tokens = TOKENS
    eos_token = "<|im_end|>"
    stop_strings = ["\nUser:"]
    chat_template = None

    def render(self, messages, tools=None, add_generation_prompt=False):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


@pytest.fixture(scope="module")
def tiny(tiny_cache):
    from polaris_dpo.compose import compose

    cfg = compose(["model=tiny", f"model.cache_dir={tiny_cache}"], run_dir=str(tiny_cache / "run"))
    path = models.resolve_model_path(cfg.model, TOKENS)
    tokenizer = models.load_tokenizer(path)
    return models.load_model(path, cfg.model, cfg.hardware, tokenizer), tokenizer


def examples(k):
    return [{"id": f"ex{i}#1", "prompt": [{"role": "user", "content": "Weather in Paris?" + " please" * i}],
             "tools": []} for i in range(k)]


def run(tiny, prompts, fmt=None, **kw):
    model, tokenizer = tiny
    args = dict(n=3, temperature=1.0, top_p=0.95, max_new_tokens=12, batch_size=2, seed=7)
    args.update(kw)
    return list(sample.generate(model, tokenizer, fmt or ChatML(), prompts, **args))


def test_samples_are_per_prompt_reproducible_and_batch_independent(tiny):
    first = run(tiny, examples(5))
    assert len(first) == 5 and all(len(s) == 3 for s in first)
    assert first == run(tiny, examples(5))  # same seed, same samples
    # a resumed run starts mid-stream, with other batches: the prompts' samples are the same
    assert run(tiny, examples(5)[3:], batch_size=1) == first[3:]
    assert run(tiny, examples(5), seed=8) != first
    assert len({s for row in first for s in row}) > 5  # samples differ (random tiny model, T=1)


def test_greedy_is_one_sample_and_deterministic(tiny):
    greedy = run(tiny, examples(2), temperature=0)
    assert [len(s) for s in greedy] == [1, 1]
    assert greedy == run(tiny, examples(2), temperature=0, batch_size=1)


def test_greedy_with_the_shared_static_cache_matches_plain_generate(tiny):
    """The prefill + static KV cache `generate` builds gives the tokens transformers' own greedy decoding gives."""
    import torch

    model, tokenizer = tiny
    prompts = examples(3)
    ours = run(tiny, prompts, temperature=0, max_new_tokens=10, batch_size=3)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for example, (text,) in zip(prompts, ours, strict=True):
        enc = tokenizer(sample.render_prompt(ChatML(), example), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=10, eos_token_id=[eos],
                                 pad_token_id=tokenizer.pad_token_id)
        plain = sample._completion(tokenizer, out[0, enc["input_ids"].shape[1]:], [eos], ChatML.stop_strings)
        assert text == plain


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_rows_that_end_leave_the_batch_and_no_sample_changes(tiny, monkeypatch, temperature):
    class EndsAtRandom(ChatML):
        stop_strings = ["s"]  # the random model writes it after a different number of tokens in each row

    model, _ = tiny
    sizes = []
    real_generate = model.generate

    def counting_generate(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting_generate)
    monkeypatch.setattr(sample, "DECODE_STAGE_TOKENS", 1000)
    whole = run(tiny, examples(4), fmt=EndsAtRandom(), max_new_tokens=24, batch_size=4, temperature=temperature)
    assert sizes == [12 if temperature else 4]
    sizes.clear()
    monkeypatch.setattr(sample, "DECODE_STAGE_TOKENS", 2)
    staged = run(tiny, examples(4), fmt=EndsAtRandom(), max_new_tokens=24, batch_size=4, temperature=temperature)
    assert staged == whole
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0], sizes  # ended rows left the batch
    assert any(len(text) > 3 for samples in staged for text in samples)


def test_progress_counts_samples(tiny):
    bar = sample.progress_bar(total=6, desc="test")
    run(tiny, examples(2), progress=bar)
    assert bar.n == 6
    bar.close()


def test_completion_stops_at_end_of_turn_and_stop_strings(tiny):
    _, tokenizer = tiny
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = tokenizer("Hello there", add_special_tokens=False).input_ids + [eos] + [tokenizer.pad_token_id] * 2
    import torch

    assert sample._completion(tokenizer, torch.tensor(ids), [eos], []) == "Hello there"
    assert sample.cut_at_stop("answer\nUser: next", ["\nUser:"]) == "answer"


def test_prompt_seed_depends_on_seed_example_and_index():
    seeds = {sample.prompt_seed(s, e, j) for s in (0, 1) for e in ("a", "b") for j in (0, 1)}
    assert len(seeds) == 8


def test_vllm_backend_fails_clearly_without_vllm_or_gpu():
    if sample.vllm_available():
        pytest.skip("vLLM and a GPU are present")
    with pytest.raises(RuntimeError, match="mine.backend=vllm needs"):
        sample.load_vllm("some/model")


def test_seeded_draws_sample_the_softmax_and_rows_are_independent():
    import torch

    from polaris_dpo.sample import _seeded_draw_processor, uniform_noise

    logits = torch.tensor([0.0, 1.0, 2.0, -1.0, float("-inf")])
    seeds = torch.arange(20000, dtype=torch.int64) * 7919 - 10**6
    counts = torch.zeros(5)
    for step in range(3):
        draw = _seeded_draw_processor(seeds, prompt_width=4)
        scores = draw(torch.zeros((len(seeds), 4 + step), dtype=torch.long), logits.expand(len(seeds), 5))
        assert torch.equal((scores == 0).sum(1), torch.ones(len(seeds), dtype=torch.long))  # one token per row
        counts += torch.bincount(scores.argmax(1), minlength=5)
    assert counts[4] == 0  # a token the warpers removed is never drawn
    assert torch.allclose(counts / counts.sum(), torch.softmax(logits, 0), atol=0.01)
    scores = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    batch = _seeded_draw_processor(seeds[:8], 4)(torch.zeros((8, 9), dtype=torch.long), scores)
    alone = _seeded_draw_processor(seeds[3:4], 4)(torch.zeros((1, 9), dtype=torch.long), scores[3:4])
    assert torch.equal(alone[0], batch[3])  # a row's draw does not depend on its batch
    assert len(set(batch.argmax(1).tolist())) > 1
    noise = uniform_noise(torch.tensor([5, 6], dtype=torch.int64), 0, 4096)
    assert 0.0 < noise.min() and noise.max() < 1.0
    assert abs(torch.corrcoef(noise)[0, 1]) < 0.1
    assert torch.equal(uniform_noise(torch.tensor([6], dtype=torch.int64), 0, 4096)[0], noise[1])  # batch-free
    assert not torch.equal(uniform_noise(torch.tensor([6], dtype=torch.int64), 1, 4096)[0], noise[1])


def conversation_prompts(turns: int) -> list[dict]:
    """One conversation cut before each assistant turn: every prompt begins the next one."""
    history, prompts = [], []
    for t in range(turns):
        history.append({"role": "user", "content": f"Question {t}: the weather in city {t}?"})
        prompts.append({"id": f"conv#{t + 1}", "prompt": list(history), "tools": []})
        history.append({"role": "assistant", "content": f"It is sunny in city {t}."})
    return prompts


def test_prefix_hosts_pick_the_longest_prompt_that_begins_with_each():
    from hypothesis import given
    from hypothesis import strategies as st

    assert sample.prefix_hosts([[1, 2], [1, 2, 3], [4], [1, 2, 3], [1]]) == [1, 1, 2, 1, 1]

    @given(st.lists(st.lists(st.integers(0, 3), max_size=5), min_size=1, max_size=8))
    def check(prefixes):
        for ids, host in zip(prefixes, sample.prefix_hosts(prefixes), strict=True):
            longest = max(len(p) for p in prefixes if p[:len(ids)] == ids)
            assert prefixes[host][:len(ids)] == ids and len(prefixes[host]) == longest

    check()


def test_prompts_that_begin_one_another_share_one_prefill(tiny):
    """An earlier turn's prompt takes its keys and values from the later turn's prefill: the cache rows equal
    each prompt's own prefill, the model runs on one row, and the samples are those of one prompt at a time."""
    import torch

    model, tokenizer = tiny
    prompts = conversation_prompts(3)
    texts = [sample.render_prompt(ChatML(), p) for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    prefixes = [row[mask.bool()].tolist()[:-1] for row, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
    assert sample.prefix_hosts(prefixes) == [2, 2, 2]
    rows = []
    handle = model.register_forward_pre_hook(lambda _, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    try:
        shared = sample.shared_prompt_cache(model, enc, 1, 4)
    finally:
        handle.remove()
    assert rows == [1]
    for i, text in enumerate(texts):
        alone = tokenizer([text], return_tensors="pt", add_special_tokens=False)
        own = sample.shared_prompt_cache(model, alone, 1, 4)
        length = len(prefixes[i])
        for mine, theirs in zip(shared.layers, own.layers, strict=True):
            width = enc["input_ids"].shape[1] - 1
            assert torch.allclose(mine.keys[i, :, width - length:width], theirs.keys[0, :, :length], atol=1e-5)
            assert torch.allclose(mine.values[i, :, width - length:width], theirs.values[0, :, :length], atol=1e-5)
    assert run(tiny, prompts, batch_size=3) == run(tiny, prompts, batch_size=1)


def test_grouped_kv_heads_attend_unrepeated_on_cpu_with_the_same_logits(tiny_cache, monkeypatch):
    import torch
    from transformers.integrations import sdpa_attention

    from polaris_dpo.compose import compose

    cfg = compose(["model=tiny", f"model.cache_dir={tiny_cache}", "model.tiny.num_key_value_heads=2",
                   "model.dtype=float32"], run_dir=str(tiny_cache / "run"))
    path = models.resolve_model_path(cfg.model, TOKENS)
    tokenizer = models.load_tokenizer(path)
    model = models.load_model(path, cfg.model, cfg.hardware, tokenizer).eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    repeats = []
    real_repeat = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda *a: repeats.append(1) or real_repeat(*a))
    monkeypatch.delenv(sample.FORCE_GQA_VARIABLE, raising=False)
    tokenizer.padding_side = "left"
    enc = tokenizer(["Weather in Paris?", "Weather in Paris please please please?"], return_tensors="pt",
                    padding=True, add_special_tokens=False)
    with torch.no_grad():
        repeated = model(**enc).logits
        assert repeats
        repeats.clear()
        with sample.grouped_kv_attention(model):
            grouped = model(**enc).logits
        assert not repeats
    assert sample.FORCE_GQA_VARIABLE not in os.environ
    mask = enc["attention_mask"].bool()
    assert torch.allclose(grouped[mask], repeated[mask], atol=1e-5)
    def samples():
        return list(sample.generate(model, tokenizer, ChatML(), examples(3), n=2, temperature=1.0, max_new_tokens=8,
                                    batch_size=3, seed=1))

    decode_environments = []
    real_decode = sample.decode_dropping_finished
    monkeypatch.setattr(sample, "decode_dropping_finished", lambda *a: decode_environments.append(
        os.environ.get(sample.FORCE_GQA_VARIABLE)) or real_decode(*a))
    grouped_samples = samples()
    assert len(grouped_samples) == 3 and not repeats
    assert decode_environments and set(decode_environments) == {None}  # decode steps fold the query heads (faster)
    monkeypatch.setattr(sample, "grouped_kv_attention", lambda model: contextlib.nullcontext())
    assert samples() == grouped_samples and repeats
