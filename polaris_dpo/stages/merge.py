"""stage merge: fold a run's adapters into its full-precision base, verify, save `<run_dir>/<merge.output>/`.

    python -m polaris_dpo stage=merge merge.source=outputs/pipeline/<run>     # or a stage output: <run>/dpo_1/dpo
    python -m polaris_dpo stage=merge merge.adapters=[path/to/sft,path/to/dpo]

Reads the chain (base + adapters) from training.json, merges in `merge.dtype` (never the 4-bit base),
compares logits against base + adapters on held-out prompts of `data`, greedily generates one function
call, and writes the model, tokenizer, chat template and verification.json (see polaris_dpo/merging.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from polaris_dpo import formats, merging, messages, readers

log = logging.getLogger(__name__)


def resolve_chain(cfg) -> merging.Chain:
    if cfg.merge.adapters:
        return merging.chain_from_adapters(list(cfg.merge.adapters))
    return merging.chain_for_run(cfg.merge.source or cfg.run_dir)  # a stage output or a run folder


def load_format(cfg, chain: merging.Chain):
    """The format the run trained with (recorded in training.json), else the configured one."""
    if chain.format:
        return formats.from_config(OmegaConf.merge(cfg.format, chain.format))
    return formats.from_config(cfg.format)


def verification_examples(cfg, count: int) -> list[dict]:
    """`count` held-out prediction points of `data`, at least one of them a function call when the data has one."""
    if count < 1:
        raise ValueError(f"merge.verify_prompts={count}: the merge is verified on at least 1 held-out prompt")
    reading = readers.read(cfg.data, cfg.run_dir)
    chosen: list[dict] = []
    spare = None  # the first text prompt passed over while the last place waited for a call
    has_call = False
    for conversation in reading:
        if not readers.is_held_out(conversation["id"], cfg.data.eval_fraction, cfg.data.split_seed):
            continue
        for example in messages.examples(conversation):
            is_call = bool(example["reference"].get("tool_calls"))
            if len(chosen) < count - 1 or (len(chosen) == count - 1 and (is_call or has_call)):
                chosen.append(example)
                has_call = has_call or is_call
            elif spare is None:
                spare = example
        if len(chosen) >= count:
            break
    if len(chosen) < count and spare is not None:  # the data has no call: a text prompt takes the place
        chosen.append(spare)
    return chosen


def run(cfg) -> dict:
    chain = resolve_chain(cfg)
    fmt = load_format(cfg, chain)
    examples = verification_examples(cfg, cfg.merge.verify_prompts)
    settings = merging.MergeSettings(dtype=cfg.merge.dtype, tolerance=cfg.merge.tolerance,
                                     max_shard_size=cfg.merge.max_shard_size,
                                     verify_max_new_tokens=cfg.merge.verify_max_new_tokens,
                                     require_call=cfg.merge.require_call)
    output = Path(cfg.run_dir) / cfg.merge.output
    result = merging.merge_and_verify(chain, output, examples, cfg.model, cfg.hardware, settings, fmt)
    generation = result["generation"]
    if generation.get("checked") and not generation["parsed"]:
        log.warning("the merged model's greedy answer to %s is not a function call that parses (%s); "
                    "reported in verification.json, not a failure unless merge.require_call=true",
                    generation["example_id"], generation.get("parse_error") or "no call")
    return result
