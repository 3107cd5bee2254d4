"""Batched generation: the model's completions for examples, reproducible per prompt.

Sampling draws its randomness per (prompt, sample), seeded from the run seed and the example id: each
step's token is drawn from softmax(logits / T) by inverse CDF with one uniform number hashed from that
seed and the step. So a prompt's samples do not depend on which other prompts share its batch or on
where a resumed run restarted. Temperature 0 is greedy decoding with one sample.

Backends: transformers `generate` (left padding, the format's end-of-turn token and stop strings),
and vLLM (`generate_vllm`) when it is installed and a GPU is present.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import os
from collections.abc import Iterable, Iterator

SORT_WINDOW_BATCHES = 8  # prompts are sorted by text within windows of this many batches
DECODE_STAGE_TOKENS = 16  # tokens generated between two drops of the rows that have ended
FORCE_GQA_VARIABLE = "TRANSFORMERS_SDPA_FORCE_GQA"  # transformers: SDPA takes grouped key/value heads as they are


def prompt_seed(seed: int, example_id: str, sample_index: int) -> int:
    """The seed of one sample: a function of the run seed, the example and the sample number only."""
    digest = hashlib.sha256(f"{seed}\x00{example_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def render_prompt(fmt, example: dict) -> str:
    return fmt.render(example["prompt"], example.get("tools") or None, add_generation_prompt=True)


def progress_bar(total: int | None = None, desc: str = "sampling"):
    """A tqdm bar counting samples (its rate is samples/s); callers show failures with `set_postfix`."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def cut_at_stop(text: str, stops: list[str]) -> str:
    """Text up to (not including) the first stop string."""
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


_MASK64 = (1 << 64) - 1


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = (_signed64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(z, bits: int):
    """Logical right shift of int64 tensors (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def uniform_noise(row_seeds, step: int, vocab_size: int):
    """Uniform (0, 1) numbers [rows, vocab_size]: a splitmix64 hash of (row seed, step, column), so each
    row's numbers depend on its own seed and position only, whatever batch it is in; one vectorised pass."""
    import torch

    tokens = torch.arange(vocab_size, dtype=torch.int64, device=row_seeds.device)
    z = row_seeds[:, None] + _signed64((step + 1) * _GOLDEN) + tokens[None, :] * _MIX2  # int64 arithmetic wraps
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    z = z ^ _shift_right(z, 31)
    return (_shift_right(z, 40).to(torch.float32) + 0.5) / float(1 << 24)


def _seeded_draw_processor(row_seeds, prompt_width: int):
    import torch
    from transformers import LogitsProcessor

    class SeededDraw(LogitsProcessor):
        """Draws each row's next token from softmax(scores) by inverse CDF, with one uniform number from the
        row's own seed and step, and returns scores whose argmax is that token (generate decodes greedily)."""

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - prompt_width
            uniform = uniform_noise(row_seeds.to(scores.device), step, 1)
            cdf = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)
            token = torch.searchsorted(cdf, uniform * cdf[:, -1:]).clamp(max=scores.shape[-1] - 1)
            return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)

    return SeededDraw()


@contextlib.contextmanager
def grouped_kv_attention(model):
    """On CPU, SDPA attends with the model's grouped key/value heads as they are (`enable_gqa`) instead of
    transformers' default for a prefill: repeating them to every query head first. For the prefill only: decode
    steps are faster with transformers' own folding of the query heads (forced grouped heads: 2.3x slower sampling).

    Same result exactly (torch's CPU kernels take grouped heads with a padding mask); transformers' own switch,
    set only while this block runs. On CUDA, grouped heads with a mask would fall back to the slow math kernel.
    """
    attention = getattr(model.config, "_attn_implementation", None)
    if next(model.parameters()).device.type != "cpu" or attention != "sdpa":
        yield
        return
    saved = os.environ.get(FORCE_GQA_VARIABLE)
    os.environ[FORCE_GQA_VARIABLE] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(FORCE_GQA_VARIABLE, None)
        else:
            os.environ[FORCE_GQA_VARIABLE] = saved


def generate(model, tokenizer, fmt, prompts: Iterable[dict], *, n: int = 1, temperature: float = 0.8,
             top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 16, seed: int = 0,
             progress=None) -> Iterator[list[str]]:
    """For each example (`id`, `prompt`, `tools`), in order, the list of its `n` completions.

    A completion is the text after the generation prompt up to the format's end of turn (not
    included), special tokens kept so that the parser sees call tokens. `progress` (a tqdm bar, see
    `progress_bar`) is advanced by the number of samples produced.
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    greedy = temperature <= 0
    n = 1 if greedy else n
    eos_ids = [tokenizer.convert_tokens_to_ids(fmt.eos_token)] if fmt.eos_token else []
    eos_ids = [i for i in eos_ids if i is not None and i != tokenizer.unk_token_id] or [tokenizer.eos_token_id]
    stops = [s for s in (fmt.stop_strings or []) if s]
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id,
                              stop_strings=stops or None)
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # prompts are read a window at a time and batched in text order inside it, so that a prompt sits beside
    # the prompts that extend it (the same conversation cut at later turns: one prefill serves them all), then
    # yielded back in the caller's order; rows per generate call: batch_size prompts x n samples
    try:
        for window in _batches(prompts, batch_size * SORT_WINDOW_BATCHES):
            texts = [render_prompt(fmt, example) for example in window]
            in_text_order = sorted(range(len(window)), key=lambda i: texts[i])
            results: list[list[str] | None] = [None] * len(window)
            for rows in _batches(in_text_order, batch_size):
                enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(device)
                with grouped_kv_attention(model):
                    cache = shared_prompt_cache(model, enc, n, max_new_tokens)
                enc = {key: value.repeat_interleave(n, dim=0) for key, value in enc.items()}
                row_seeds = torch.tensor([_signed64(prompt_seed(seed, str(window[i]["id"]), j))
                                          for i in rows for j in range(n)], dtype=torch.int64)
                prompt_width = enc["input_ids"].shape[1]

                def processors_for(kept, row_seeds=row_seeds, prompt_width=prompt_width):
                    processors = LogitsProcessorList()
                    if not greedy:
                        processors.append(TemperatureLogitsWarper(temperature))
                        if top_p < 1.0:
                            processors.append(TopPLogitsWarper(top_p))
                        processors.append(_seeded_draw_processor(row_seeds[kept], prompt_width))
                    return processors

                with torch.no_grad():
                    generated = decode_dropping_finished(model, tokenizer, enc, cache, config, processors_for,
                                                         max_new_tokens, eos_ids, stops)
                completions = [_completion(tokenizer, row, eos_ids, stops) for row in generated]
                for k, i in enumerate(rows):
                    results[i] = completions[k * n:(k + 1) * n]
                if progress is not None:
                    progress.update(n * len(rows))
            yield from results
    finally:
        model.train(was_training)


def decode_dropping_finished(model, tokenizer, enc, cache, config, processors_for, max_new_tokens: int,
                             eos_ids: list[int], stops: list[str]) -> list[list[int]]:
    """The new token ids of every row of `enc`, generated DECODE_STAGE_TOKENS at a time.

    Between stages the rows that have ended (end of turn, or a stop string) leave the batch and the cache,
    so the rows still writing stop paying for them: a batch otherwise computes every row until its longest
    one ends. `processors_for(rows)` gives the logits processors of those rows (their own seeds), and the
    cache holds every token but the last one of `enc`, as generate expects it.
    """
    import torch

    ids, mask = enc["input_ids"], enc["attention_mask"]
    rows = torch.arange(ids.shape[0])
    generated: list[list[int]] = [[] for _ in range(ids.shape[0])]
    produced = 0
    while produced < max_new_tokens:
        stage = copy.deepcopy(config)
        left = max_new_tokens - produced
        stage.max_new_tokens = left if len(rows) == 1 else min(DECODE_STAGE_TOKENS, left)  # one row: none to drop
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=stage,
                             logits_processor=processors_for(rows), tokenizer=tokenizer, cache=cache)
        new = out[:, ids.shape[1]:]
        produced += stage.max_new_tokens
        writing = []
        for k, row in enumerate(rows.tolist()):
            generated[row] += new[k].tolist()
            if not _ended(tokenizer, generated[row], eos_ids, stops):
                writing.append(k)
        if not writing or produced >= max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(new.shape)], dim=1)
        ids = out
        if len(writing) < len(rows):
            kept = torch.tensor(writing, device=ids.device)
            ids, mask, rows = ids[kept], mask[kept], rows[kept.cpu()]
            cache.reorder_cache(kept)  # beam search's row selection: every layer keeps only these rows
    return generated


def _ended(tokenizer, token_ids: list[int], eos_ids: list[int], stops: list[str]) -> bool:
    if any(token in eos_ids for token in token_ids):
        return True
    if not stops:
        return False
    text = tokenizer.decode(token_ids, skip_special_tokens=False)
    return cut_at_stop(text, stops) != text


def prefix_hosts(prefixes: list[list[int]]) -> list[int]:
    """For each token sequence, the index of the longest sequence in the list that starts with it (itself when
    none is longer; the first of equals): that one's prefill covers both."""
    hosts = []
    for ids in prefixes:
        containing = [j for j, other in enumerate(prefixes) if len(other) >= len(ids) and other[:len(ids)] == ids]
        hosts.append(max(containing, key=lambda j: (len(prefixes[j]), -j)))
    return hosts


def shared_prompt_cache(model, enc, n: int, max_new_tokens: int):
    """The prompts' KV cache (all but the last prompt token, which generate feeds itself), computed once and
    repeated for their n samples: n samples cost one prefill, not n. A prompt whose tokens begin another prompt
    of the batch (an earlier turn of the same conversation) is not prefilled at all: its keys and values are the
    first positions of the longer prompt's, since attention is causal and positions start at each prompt's
    first token.

    The cache handed to generate is static (preallocated for prompt + max_new_tokens): a dynamic cache
    concatenates every layer's keys and values at each step, which copies the whole cache per token and
    made small models' sampling several times slower than their forward passes."""
    import torch
    from transformers import DynamicCache, StaticCache

    ids, mask = enc["input_ids"][:, :-1], enc["attention_mask"][:, :-1]
    width = ids.shape[1]
    lengths = mask.sum(-1).tolist()  # left padding: row i's prefix fills the last lengths[i] columns
    prefixes = [row[width - length:].tolist() for row, length in zip(ids, lengths, strict=True)]
    hosts = prefix_hosts(prefixes)
    prefilled = sorted(set(hosts))
    host_row = {host: k for k, host in enumerate(prefilled)}
    prefill = DynamicCache(config=model.config)
    positions = (mask[prefilled].long().cumsum(-1) - 1).clamp(min=0)  # what generate uses with left padding
    with torch.no_grad():
        model(input_ids=ids[prefilled], attention_mask=mask[prefilled], position_ids=positions,
              cache=prefill, use_cache=True)
    cache = StaticCache(config=model.config, max_cache_len=enc["input_ids"].shape[1] + max_new_tokens)
    for index, layer in enumerate(prefill.layers):
        if len(prefilled) == len(prefixes):  # no prompt begins another: the prefill is already laid out by row
            cache.update(layer.keys.repeat_interleave(n, dim=0), layer.values.repeat_interleave(n, dim=0), index)
            continue
        keys, values = (torch.zeros((len(prefixes), *layer.keys.shape[1:]), dtype=layer.keys.dtype,
                                    device=layer.keys.device) for _ in range(2))
        for row, (host, length) in enumerate(zip(hosts, lengths, strict=True)):
            start = width - lengths[host]
            keys[row, :, width - length:] = layer.keys[host_row[host], :, start:start + length]
            values[row, :, width - length:] = layer.values[host_row[host], :, start:start + length]
        cache.update(keys.repeat_interleave(n, dim=0), values.repeat_interleave(n, dim=0), index)
    return cache


def _completion(tokenizer, token_ids, eos_ids: list[int], stops: list[str]) -> str:
    ids = token_ids.tolist() if hasattr(token_ids, "tolist") else list(token_ids)
    for i, token in enumerate(ids):
        if token in eos_ids:
            ids = ids[:i]
            break
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in eos_ids:
        ids = [t for t in ids if t != pad]
    return cut_at_stop(tokenizer.decode(ids, skip_special_tokens=False), stops)


def vllm_available() -> bool:
    """vLLM is installed and a CUDA device is present."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def load_vllm(model_path: str, tokenizer_path: str | None = None, dtype: str = "auto", **kwargs):
    """A `vllm.LLM` for `model_path`; a clear error when vLLM or a GPU is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise RuntimeError("mine.backend=vllm needs vLLM: pip install 'polaris-dpo[vllm]' (or use mine.backend=transformers)")
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("mine.backend=vllm needs a CUDA GPU; none is visible (use mine.backend=transformers)")
    from vllm import LLM

    return LLM(model=model_path, tokenizer=tokenizer_path or model_path, dtype=dtype, **kwargs)


def generate_vllm(llm, fmt, prompts: Iterable[dict], *, n: int = 1, temperature: float = 0.8, top_p: float = 1.0,
                  max_new_tokens: int = 256, batch_size: int = 256, seed: int = 0,
                  progress=None) -> Iterator[list[str]]:
    """`generate` on vLLM: one request per (prompt, sample), each with its own seed, so resumes match."""
    from vllm import SamplingParams

    greedy = temperature <= 0
    n = 1 if greedy else n
    stops = [s for s in [fmt.eos_token, *(fmt.stop_strings or [])] if s]
    for batch in _batches(prompts, batch_size):
        texts, params = [], []
        for example in batch:
            text = render_prompt(fmt, example)
            for j in range(n):
                texts.append(text)
                params.append(SamplingParams(
                    n=1, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                    max_tokens=max_new_tokens, seed=None if greedy else prompt_seed(seed, str(example["id"]), j),
                    stop=stops, skip_special_tokens=False))
        outputs = llm.generate(texts, params, use_tqdm=False)
        completions = [cut_at_stop(o.outputs[0].text, stops) for o in outputs]
        for i in range(len(batch)):
            if progress is not None:
                progress.update(n)
            yield completions[i * n:(i + 1) * n]
