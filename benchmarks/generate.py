"""Batched against one-at-a-time sampling on the tiny model through `polaris_dpo.sample.generate`: tokens per second.

Same prompts (the demo data's prediction points), same seed, temperature 0.8, one sample per prompt; only
`batch_size` differs. A prompt's samples do not depend on its batch (sample.py seeds each row on its own), so
both runs generate the same text and the tokens counted are the same. One torch thread, as in the DPO benchmarks.
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


def timed(model, tokenizer, fmt, examples, batch_size: int, max_new_tokens: int) -> tuple[list[str], float, float]:
    from polaris_dpo import sample

    start, cpu = time.perf_counter(), time.process_time()
    texts = [samples[0] for samples in sample.generate(model, tokenizer, fmt, examples, n=1, temperature=0.8,
                                                       max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                       seed=0)]
    return texts, time.perf_counter() - start, time.process_time() - cpu


def run(quick: bool) -> dict:
    import torch

    from polaris_dpo import formats, models, sample

    torch.set_num_threads(1)
    scratch = _support.scratch_dir()
    cfg = _support.compose(["stage=mine"], scratch / "run")
    fmt = formats.from_config(cfg.format)
    path = models.model_path_for(cfg, fmt)
    tokenizer = models.load_tokenizer(path, fmt)
    model = models.load_model(path, cfg.model, cfg.hardware, tokenizer)
    count, max_new_tokens, batch_size = (8, 32, 8) if quick else (32, 64, 16)
    examples = prompts(cfg, count)
    timed(model, tokenizer, fmt, examples[:2], 2, 4)  # warm-up
    batched, batched_wall, batched_cpu = timed(model, tokenizer, fmt, examples, batch_size, max_new_tokens)
    single, single_wall, single_cpu = timed(model, tokenizer, fmt, examples, 1, max_new_tokens)
    by_length = sorted(examples, key=lambda e: len(tokenizer(sample.render_prompt(fmt, e))["input_ids"]))
    _, sorted_wall, sorted_cpu = timed(model, tokenizer, fmt, by_length, batch_size, max_new_tokens)
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in batched)
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
        f"{len(examples)} prompts of the demo data, format {fmt.name}, the default tiny model (random weights, so "
        f"samples run to max_new_tokens={max_new_tokens} or an end of turn), temperature 0.8, CPU, 1 torch thread",
        "tokens = the completions re-tokenised (what a user receives); a batch keeps computing rows that have "
        "already stopped until its longest row ends, which the figure includes",
        "a batch is left-padded to its longest prompt (here prompts of "
        f"{min(lengths)}-{max(lengths)} tokens): sample.generate batches prompts by length within windows of "
        "8 batches and yields them back in the caller's order, so the caller's own sorting changes little; "
        "copies of one prompt show batching with no padding at all",
    ]
    return {"title": "Sampling: batched vs one prompt at a time (polaris_dpo.sample.generate)", "rows": rows,
            "notes": notes}
