"""Sampling through `polaris_dpo.sample.generate`: batched against one at a time (tiny model), and against plain
transformers `generate` doing the same work (tiny model and SmolLM2-135M-Instruct).

Batched against one at a time: same prompts (the demo data's prediction points), same seed, temperature 0.8, one
sample per prompt; only `batch_size` differs. A prompt's samples do not depend on its batch (sample.py seeds each row
on its own), so both runs generate the same text and the tokens counted are the same.

Against plain `generate`: n samples per prompt from one batch of prompts, ours (shared prefill, static cache, seeded
draws) against `model.generate(do_sample=True, num_return_sequences=n)` with the library's default (dynamic) cache,
on left-padded batches of the same prompts and size. The two draw different tokens, so their token counts differ and
both are reported. The tiny model on one torch thread, as in the DPO benchmarks; SmolLM2 as the default job samples it.
"""

from __future__ import annotations

import time

from benchmarks import _support


def prompts(cfg, count: int) -> list[dict]:
    from polaris_dpo import messages, readers

    examples = []
    for conversation in readers.read(cfg.data):
        examples.extend(messages.examples(conversation))
        if len(examples) >= count:
            break
    return examples[:count]


def timed(model, tokenizer, fmt, examples, batch_size: int, max_new_tokens: int,
          n: int = 1) -> tuple[list[str], float, float]:
    """(every sample, prompt by prompt, wall seconds, CPU seconds) of `sample.generate`."""
    from polaris_dpo import sample

    start, cpu = time.perf_counter(), time.process_time()
    texts = [text for samples in sample.generate(model, tokenizer, fmt, examples, n=n, temperature=0.8,
                                                 max_new_tokens=max_new_tokens, batch_size=batch_size, seed=0)
             for text in samples]
    return texts, time.perf_counter() - start, time.process_time() - cpu


def plain_timed(model, tokenizer, fmt, examples, batch_size: int, max_new_tokens: int,
                n: int) -> tuple[list[str], float, float]:
    """`timed` done with the plain library: `model.generate` with its default (dynamic) cache and sampler, n samples
    per prompt through num_return_sequences, prompts batched by length within windows as sample.generate once did, completions
    cut at the format's end of turn as sample.generate cuts them."""
    import torch

    from polaris_dpo import sample

    eos_id = tokenizer.convert_tokens_to_ids(fmt.eos_token)
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    start, cpu = time.perf_counter(), time.process_time()
    texts = [sample.render_prompt(fmt, example) for example in examples]
    completions = []
    for window in sample._batches(texts, batch_size * sample.SORT_WINDOW_BATCHES):
        for batch in sample._batches(sorted(window, key=len), batch_size):
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**enc, do_sample=True, temperature=0.8, num_return_sequences=n,
                                     max_new_tokens=max_new_tokens, eos_token_id=eos_id,
                                     pad_token_id=tokenizer.pad_token_id)
            completions += [sample._completion(tokenizer, row, [eos_id], [])
                            for row in out[:, enc["input_ids"].shape[1]:]]
    return completions, time.perf_counter() - start, time.process_time() - cpu


def token_count(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)


def load(model_name: str, scratch, overrides: list[str] = ()):
    """(cfg, format, tokenizer, model) of `model=<model_name>` as stage mine loads them."""
    from polaris_dpo import formats, models

    cfg = _support.compose(["stage=mine", f"model={model_name}", *overrides], scratch / f"{model_name}-run")
    fmt = formats.from_config(cfg.format)
    path = models.model_path_for(cfg, fmt)
    tokenizer = models.load_tokenizer(path, fmt)
    return cfg, fmt, tokenizer, models.load_model(path, cfg.model, cfg.hardware, tokenizer)


def batching(cfg, fmt, tokenizer, model, quick: bool) -> tuple[list, list]:
    """Batched against one prompt at a time, on the same prompts (the samples are the same text)."""
    from polaris_dpo import sample

    count, max_new_tokens, batch_size = (8, 32, 8) if quick else (32, 64, 16)
    examples = prompts(cfg, count)
    timed(model, tokenizer, fmt, examples[:2], 2, 4)  # warm-up
    batched, batched_wall, batched_cpu = timed(model, tokenizer, fmt, examples, batch_size, max_new_tokens)
    single, single_wall, single_cpu = timed(model, tokenizer, fmt, examples, 1, max_new_tokens)
    by_length = sorted(examples, key=lambda e: len(tokenizer(sample.render_prompt(fmt, e))["input_ids"]))
    _, sorted_wall, sorted_cpu = timed(model, tokenizer, fmt, by_length, batch_size, max_new_tokens)
    tokens = token_count(tokenizer, batched)
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    copies = [dict(examples[0], id=f"copy-{i}") for i in range(batch_size)]  # one length: no padding at all
    _, copies_batched, _ = timed(model, tokenizer, fmt, copies, batch_size, max_new_tokens)
    _, copies_single, _ = timed(model, tokenizer, fmt, copies, 1, max_new_tokens)
    lengths = [len(tokenizer(sample.render_prompt(fmt, e))["input_ids"]) for e in examples]
    rows = [
        (f"batched (batch_size={batch_size}): tokens per wall second", round(tokens / batched_wall, 1), "tokens/s"),
        ("one at a time (batch_size=1): tokens per wall second", round(tokens / single_wall, 1), "tokens/s"),
        ("ratio batched / one at a time (wall)", round(single_wall / batched_wall, 2), "x"),
        ("ratio batched / one at a time (CPU time)", round(single_cpu / batched_cpu, 2), "x"),
        ("batched, prompts sorted by length: tokens per wall second", round(tokens / sorted_wall, 1), "tokens/s"),
        ("ratio batched sorted / one at a time (CPU time)", round(single_cpu / sorted_cpu, 2), "x"),
        (f"ratio batched / one at a time, {batch_size} copies of one prompt (no padding, wall)",
         round(copies_single / copies_batched, 2), "x"),
        ("tokens generated", tokens, "tokens"),
        ("samples identical in both modes", same, f"of {len(batched)}"),
    ]
    notes = [
        f"batched against one at a time: {len(examples)} prompts of the demo data ({min(lengths)}-{max(lengths)} "
        f"tokens), one sample each, max_new_tokens={max_new_tokens}; tokens = the completions re-tokenised (what a "
        "user receives); rows that have ended leave a batch every 16 tokens (sample.DECODE_STAGE_TOKENS); copies of "
        "one prompt show batching with no padding at all",
    ]
    return rows, notes


def versus_plain(cfg, fmt, tokenizer, model, count: int, batch_size: int, max_new_tokens: int,
                 n: int = 4) -> tuple[list, list]:
    """n samples per prompt: sample.generate against plain `model.generate` on the same batches of prompts."""
    examples = prompts(cfg, count)
    plain_timed(model, tokenizer, fmt, examples[:2], 2, 4, n)  # warm-up
    timed(model, tokenizer, fmt, examples[:2], 2, 4, n)
    ours, ours_wall, ours_cpu = timed(model, tokenizer, fmt, examples, batch_size, max_new_tokens, n)
    plain, plain_wall, plain_cpu = plain_timed(model, tokenizer, fmt, examples, batch_size, max_new_tokens, n)
    ours_tokens, plain_tokens = token_count(tokenizer, ours), token_count(tokenizer, plain)
    rows = [
        (f"ours, {len(examples)} prompts x {n} samples: samples per wall second", round(len(ours) / ours_wall, 2),
         "samples/s"),
        (f"plain generate, {len(examples)} prompts x {n} samples: samples per wall second",
         round(len(plain) / plain_wall, 2), "samples/s"),
        ("ratio ours / plain generate (wall)", round(plain_wall / ours_wall, 2), "x"),
        ("ratio ours / plain generate (CPU time)", round(plain_cpu / ours_cpu, 2), "x"),
        ("ours: tokens generated", ours_tokens, "tokens"),
        ("plain generate: tokens generated", plain_tokens, "tokens"),
        ("ours: tokens per wall second", round(ours_tokens / ours_wall, 1), "tokens/s"),
        ("plain generate: tokens per wall second", round(plain_tokens / plain_wall, 1), "tokens/s"),
        ("ratio ours / plain generate (tokens per wall second)",
         round((ours_tokens / ours_wall) / (plain_tokens / plain_wall), 2), "x"),
    ]
    notes = [
        f"ours against plain generate: {len(examples)} prompts of the demo data, {n} samples each, temperature 0.8, "
        f"batch_size={batch_size} prompts ({batch_size * n} rows per generate call), max_new_tokens={max_new_tokens}, "
        f"weights in {str(model.dtype).removeprefix('torch.')}; plain is `model.generate(do_sample=True, "
        "temperature=0.8, num_return_sequences=n)` with the library's default (dynamic) cache, on the same "
        "left-padded batches; both cut completions at the format's end of turn; plain runs each batch until its "
        "longest row ends, ours drops the rows that have ended every 16 tokens and, on CPU, prefills with the grouped key/value heads unrepeated; they draw different tokens (ours: one seeded uniform number per sample and step), so tokens per "
        "second is the fair comparison and samples per second counts every sample, however long",
    ]
    return rows, notes


def run(quick: bool) -> dict:
    import torch

    scratch = _support.scratch_dir()
    rows, notes = [], []
    torch.set_num_threads(1)  # the tiny model: one thread, as in the DPO benchmarks
    cfg, fmt, tokenizer, model = load("tiny", scratch)
    batch_rows, batch_notes = batching(cfg, fmt, tokenizer, model, quick)
    count, batch_size = (8, 8) if quick else (16, 16)
    plain_rows, plain_notes = versus_plain(cfg, fmt, tokenizer, model, count, batch_size, 32 if quick else 64)
    rows += [(f"tiny: {label}", value, unit) for label, value, unit in batch_rows + plain_rows]
    notes += [f"tiny (random weights, so samples run to max_new_tokens or an end of turn), format {fmt.name}, CPU, "
              "1 torch thread: " + note for note in batch_notes + plain_notes]
    torch.set_num_threads(2)  # SmolLM2 as the default job samples it: bfloat16 weights, every core
    cfg, fmt, tokenizer, model = load("smollm2-135m", scratch, ["model.dtype=bfloat16"])
    count, batch_size = (12, 12) if quick else (24, 12)
    plain_rows, plain_notes = versus_plain(cfg, fmt, tokenizer, model, count, batch_size, 64)
    rows += [(f"smollm2-135m: {label}", value, unit) for label, value, unit in plain_rows]
    notes += [f"smollm2-135m (the default job's eval and mine settings), CPU, 2 torch threads: {note}"
              for note in plain_notes]
    return {"title": "Sampling: polaris_dpo.sample.generate batched vs one prompt at a time, and vs plain "
                     "transformers generate", "rows": rows, "notes": notes}
