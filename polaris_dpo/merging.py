"""Fold a run's adapter chain into a full-precision base, save it, and check the result against what was trained.

A stage output folder (`<run_dir>/sft/`, `<run_dir>/dpo/`) holds `training.json`:
{"stage", "base_model", "adapter_chain": [adapter dirs folded in order], "finetune": "lora" | "full",
"load_in_4bit", "format": {...}}. The merge always loads `base_model` in full precision (never the 4-bit
base a QLoRA run trained on: a merge into repacked or re-quantised 4-bit weights loses quality silently),
folds the adapters in order, including rows of added tokens (peft `trainable_token_indices` or
`modules_to_save`), and saves safetensors shards with the tokenizer and its chat template.

Verification compares the saved folder, reloaded with plain Auto classes, against the model as training
saw it: the earlier adapters folded, the last one applied unmerged. For a 4-bit run it compares against
both the full-precision base and the 4-bit base; the tolerance applies to the first, the second is
reported for information (4-bit rounding differs from the full-precision weights by design).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from polaris_dpo import lineage
from polaris_dpo.atomic import atomic_write_json
from polaris_dpo.lineage import TRAINING_JSON

log = logging.getLogger(__name__)

# float32 folding error grows with depth: 1.1e-4 measured on SmolLM2-135M (30 layers, logits up to ~30) with
# top-1 agreement 100 %; a lost or random row moves logits by whole units
DEFAULT_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}
VERIFICATION_RECORD = "verification.json"


class MergeError(RuntimeError):
    """A merge that cannot be done or did not verify; the message says which file or figure."""


@dataclass
class Chain:
    """What to merge: a base (hub id or folder) and the adapter folders folded into it in order."""

    base_model: str
    adapters: list[Path]
    tokenizer_dir: Path  # the newest stage output: its tokenizer carries the format's tokens and template
    load_in_4bit: bool = False  # the run trained on a 4-bit base (QLoRA)
    format: dict | None = None  # the format config the run trained with
    records: list[dict] = field(default_factory=list)  # training.json of the folders involved


@contextmanager
def lineage_errors_as_merge_errors():
    try:
        yield
    except lineage.LineageError as err:
        raise MergeError(str(err)) from None


def chain_from_stage_output(folder: str | Path) -> Chain:
    """The chain a stage output folder records in its training.json."""
    folder = Path(folder)
    with lineage_errors_as_merge_errors():
        record = lineage.read_record(folder)
        if record is None:
            raise MergeError(f"{folder}: no {TRAINING_JSON} (is this a stage sft/dpo output folder?)")
        made_of = lineage.from_record(folder, record)
    return Chain(base_model=made_of.base_model, adapters=made_of.adapters, tokenizer_dir=folder,
                 load_in_4bit=bool(record.get("load_in_4bit", False)), format=record.get("format"),
                 records=[record])


def chain_from_adapters(adapters: list[str | Path]) -> Chain:
    """An explicit list of adapter folders, folded in order; the base is the first one's."""
    if not adapters:
        raise MergeError("merge.adapters is empty")
    paths = [Path(a).expanduser() for a in adapters]
    with lineage_errors_as_merge_errors():
        records = [r for r in (lineage.read_record(p) for p in paths) if r is not None]
        base = records[0]["base_model"] if records else lineage.adapter_base(paths[0])
        for path in paths:
            lineage.adapter_base(path)  # each must be an adapter folder
    return Chain(base_model=base, adapters=paths, tokenizer_dir=paths[-1],
                 load_in_4bit=any(r.get("load_in_4bit", False) for r in records),
                 format=records[-1].get("format") if records else None, records=records)


def chain_for_run(folder: str | Path) -> Chain:
    """The chain of a stage output (`.../dpo`, with its training.json) or of a run folder: a stage run's
    dpo/ when it is complete, else sft/; a pipeline run's newest dpo_N/dpo, else sft/sft."""
    folder = Path(folder)
    if (folder / TRAINING_JSON).is_file():
        return chain_from_stage_output(folder)
    rounds = sorted((p for p in folder.glob("dpo_*/dpo") if p.parent.name[4:].isdigit()),
                    key=lambda p: int(p.parent.name[4:]), reverse=True)
    for candidate in [folder / "dpo", folder / "sft", *rounds, folder / "sft" / "sft"]:
        if (candidate / TRAINING_JSON).is_file():
            return chain_from_stage_output(candidate)
    raise MergeError(f"{folder}: not a stage output (no {TRAINING_JSON}) nor a run folder with dpo/, sft/ or a "
                     "pipeline's dpo_N/dpo; name the folders with merge.adapters=[...] or merge.source=...")


def fingerprint(chain: Chain, dtype: str) -> str:
    """Identifies the inputs of a merge: base, dtype and the bytes of every adapter's config and weights."""
    digest = hashlib.sha256(json.dumps({"base": chain.base_model, "dtype": dtype}).encode())
    for adapter in chain.adapters:
        for path in sorted(adapter.iterdir()):
            if path.name == "adapter_config.json" or path.name.startswith("adapter_model"):
                digest.update(path.name.encode())
                with path.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()


def existing_verification(folder: str | Path, expected_fingerprint: str) -> dict | None:
    """verification.json of a merged folder when it passed for exactly these inputs, else None."""
    path = Path(folder) / VERIFICATION_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("passed") and record.get("source", {}).get("fingerprint") == expected_fingerprint:
        return record
    return None


# ---------------------------------------------------------------- loading and folding


def merge_dtype(name: str):
    """The torch dtype a merge folds in: float32 or bfloat16 (never a 4-bit or fp16 base)."""
    from polaris_dpo import models

    return models.dtype_named(name, "merge.dtype", "float32 | bfloat16")


def load_tokenizer(chain: Chain, fmt=None):
    """The trained tokenizer (format tokens, chat template) from the newest stage output, or the base's plus the format's."""
    from polaris_dpo import models

    source = chain.tokenizer_dir if (chain.tokenizer_dir / "tokenizer_config.json").is_file() else chain.base_model
    tokenizer = models.load_tokenizer(str(source), fmt)
    if tokenizer.chat_template is None:
        raise MergeError(f"{source}: the tokenizer has no chat template and no format supplies one")
    return tokenizer


def load_base(chain: Chain, model_cfg, hardware_cfg, tokenizer, dtype: str, in_4bit: bool = False):
    """The base as `models.load_model` loads it (embeddings resized to the tokenizer), in `dtype` or 4-bit."""
    from omegaconf import OmegaConf

    from polaris_dpo import models

    model_cfg = OmegaConf.merge(model_cfg, {"dtype": dtype, "load_in_4bit": in_4bit})
    model = models.load_model(chain.base_model, model_cfg, hardware_cfg, tokenizer)
    model.eval()
    return model


def _adapter_config(adapter: Path) -> dict:
    return json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))


def _module_short_name(model, module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    return ""


def _saved_full_layers(adapter: Path, vocab: int) -> set[str]:
    """Layers whose whole weight the adapter file holds (peft's `save_embedding_layers`, on by default after a resize)."""
    from safetensors import safe_open

    names = set()
    for weights in adapter.glob("adapter_model*.safetensors"):
        with safe_open(str(weights), "pt") as handle:
            for key in handle.keys():
                parts = key.split(".")
                if parts[-1] == "weight" and "lora_" not in key and handle.get_slice(key).get_shape()[0] == vocab:
                    names.update(p for p in parts[:-1] if p not in ("base_layer", "token_adapter", "weight"))
    return names


def check_added_rows_are_carried(model, chain: Chain, base_vocab: int) -> None:
    """Rows of tokens added after the base (resized embeddings start random) must come from the adapters.

    Otherwise the merged model's rows are fresh random values, not the ones training used.
    """
    vocab = model.get_input_embeddings().weight.shape[0]
    if vocab <= base_vocab:
        return
    added = set(range(base_vocab, vocab))
    layers = [model.get_input_embeddings()]
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if not tied and model.get_output_embeddings() is not None:
        layers.append(model.get_output_embeddings())
    for layer in layers:
        name = _module_short_name(model, layer)
        carried: set[int] = set()
        for adapter in chain.adapters:
            config = _adapter_config(adapter)
            if name in (config.get("modules_to_save") or []) or name in _saved_full_layers(adapter, vocab):
                carried = set(added)
            indices = config.get("trainable_token_indices") or {}
            if isinstance(indices, list):  # a list targets the input embedding (and a tied head with it)
                indices = {_module_short_name(model, model.get_input_embeddings()): indices}
            carried |= set(indices.get(name, []))
        missing = sorted(added - carried)
        if missing:
            raise MergeError(f"the tokenizer adds token ids {missing[:8]}{'...' if len(missing) > 8 else ''} beyond the "
                             f"base vocabulary ({base_vocab}) but no adapter in {[str(a) for a in chain.adapters]} saves "
                             f"their rows of '{name}' (trainable_token_indices or modules_to_save): merged rows would "
                             "be random")


def _free(*objects) -> None:
    del objects
    gc.collect()


# ---------------------------------------------------------------- saving


def save_folder(model, tokenizer, folder: Path, max_shard_size: str) -> None:
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)


def publish(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with renames, so readers never see a half-written folder."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- verification


def render_prompts(tokenizer, examples: list[dict]) -> list[str]:
    """Each example's prompt through the chat template saved with the model: what a server will render."""
    return [tokenizer.apply_chat_template(ex["prompt"], tools=ex.get("tools") or None, add_generation_prompt=True,
                                          tokenize=False) for ex in examples]


def prompt_logits(model, tokenizer, prompts: list[str]) -> list:
    import torch

    out = []
    with torch.no_grad():
        for text in prompts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
            out.append(model(input_ids=ids).logits[0].float().cpu())
    return out


def _all_finite(logits: list) -> bool:
    return all(bool(t.isfinite().all()) for t in logits)


def compare_logits(reference: list, merged: list) -> dict:
    diffs = [(r - m).abs() for r, m in zip(reference, merged, strict=True)]
    agree = sum(int((r.argmax(-1) == m.argmax(-1)).sum()) for r, m in zip(reference, merged, strict=True))
    positions = sum(d.shape[0] for d in diffs)
    return {"max_abs_diff": max(float(d.max()) for d in diffs),
            "mean_abs_diff": sum(float(d.sum()) for d in diffs) / sum(d.numel() for d in diffs),
            "top1_agreement": agree / positions, "positions": positions,
            "reference_finite": _all_finite(reference), "merged_finite": _all_finite(merged)}


def logit_failures(comparison: dict, tolerance: float) -> list[str]:
    """Why a logit comparison fails verification: non-finite logits, or a difference that is not within tolerance."""
    failures = [f"the {side} logits contain NaN or inf" for side, key in
                (("base+adapters", "reference_finite"), ("merged model's", "merged_finite")) if not comparison[key]]
    diff = comparison["max_abs_diff"]
    if not failures and not math.isfinite(diff):
        failures.append(f"max |logit diff| against base+adapters is {diff} (not finite)")
    elif math.isfinite(diff) and diff > tolerance:
        failures.append(f"max |logit diff| {diff:.3g} against base+adapters exceeds merge.tolerance {tolerance:g}")
    return failures


def greedy_call(model, tokenizer, fmt, examples: list[dict], max_new_tokens: int) -> dict:
    """Greedy generation on the first prompt whose reference calls a function; does it parse as a call in the format?"""
    import torch

    if fmt is None:
        return {"checked": False, "reason": "no format available to parse the output"}
    example = next((ex for ex in examples if (ex.get("reference") or {}).get("tool_calls")), None)
    if example is None:
        return {"checked": False, "reason": "no verification prompt has a reference function call"}
    text = render_prompts(tokenizer, [example])[0]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
    eos = [tokenizer.eos_token_id]
    if fmt.eos_token and fmt.eos_token in tokenizer.get_vocab():
        eos.append(tokenizer.convert_tokens_to_ids(fmt.eos_token))
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                             stop_strings=list(fmt.stop_strings) or None, tokenizer=tokenizer)
    generated = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False)
    if fmt.eos_token and fmt.eos_token in generated:
        generated = generated[:generated.index(fmt.eos_token)]
    message = fmt.parse(generated)
    error = message.get("parse_error")
    calls = message.get("tool_calls") or []
    expected = [c["function"]["name"] for c in example["reference"]["tool_calls"]]
    return {"checked": True, "example_id": example.get("id"), "parsed": bool(calls) and error is None,
            "parse_error": getattr(error, "reason", None), "expected_functions": expected,
            "called_functions": [c["function"]["name"] for c in calls], "text": generated[:500]}


@dataclass
class MergeSettings:
    dtype: str = "float32"
    tolerance: float | None = None
    max_shard_size: str = "2GB"
    verify_max_new_tokens: int = 64
    require_call: bool = False


def merge_and_verify(chain: Chain, output: str | Path, examples: list[dict], model_cfg, hardware_cfg,
                     settings: MergeSettings, fmt=None) -> dict:
    """Merge, save into a staging folder, verify, write verification.json, then publish at `output`.

    A folder that fails verification is kept at `<output>.failed/` (with its verification.json) and
    MergeError is raised.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = Path(output)
    if not examples:
        raise MergeError("no verification prompts: the eval data gave no examples")
    tolerance = settings.tolerance if settings.tolerance is not None else DEFAULT_TOLERANCE[settings.dtype]
    merge_dtype(settings.dtype)
    tokenizer = load_tokenizer(chain, fmt)
    prompts = render_prompts(tokenizer, examples)

    log.info("merging %d adapter(s) into %s (%s)", len(chain.adapters), chain.base_model, settings.dtype)
    model = load_base(chain, model_cfg, hardware_cfg, tokenizer, settings.dtype)
    check_added_rows_are_carried(model, chain, _original_vocab(chain, model_cfg))
    model = lineage.fold(model, chain.adapters)
    if fmt is not None and fmt.eos_token in tokenizer.get_vocab():
        model.generation_config.eos_token_id = sorted({tokenizer.eos_token_id,
                                                       tokenizer.convert_tokens_to_ids(fmt.eos_token)})
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        save_folder(model, tokenizer, staging, settings.max_shard_size)
        _free(model)

        reference = load_base(chain, model_cfg, hardware_cfg, tokenizer, settings.dtype)
        reference = lineage.fold(reference, chain.adapters, keep_last_unmerged=True)
        reference_logits = prompt_logits(reference, tokenizer, prompts)
        _free(reference)

        merged = AutoModelForCausalLM.from_pretrained(staging, dtype=merge_dtype(settings.dtype))
        merged.eval()
        plain_tokenizer = AutoTokenizer.from_pretrained(staging)
        if plain_tokenizer.chat_template != tokenizer.chat_template:
            raise MergeError(f"{staging}: the saved chat template does not reload unchanged")
        if getattr(plain_tokenizer, "response_template", None) != getattr(tokenizer, "response_template", None):
            raise MergeError(f"{staging}: the saved response template does not reload unchanged")
        merged_logits = prompt_logits(merged, plain_tokenizer, prompts)
        full = compare_logits(reference_logits, merged_logits)
        generation = greedy_call(merged, plain_tokenizer, fmt, examples, settings.verify_max_new_tokens)
        _free(merged)

        quantized = None
        if chain.load_in_4bit:
            reference = load_base(chain, model_cfg, hardware_cfg, tokenizer, settings.dtype, in_4bit=True)
            reference = lineage.fold(reference, chain.adapters, keep_last_unmerged=True)
            quantized = compare_logits(prompt_logits(reference, tokenizer, prompts), merged_logits)
            _free(reference)

        failures = logit_failures(full, tolerance)
        if settings.require_call and not generation.get("parsed"):
            failures.append("the greedy generation did not produce a function call that parses "
                            "(merge.require_call=true)")
        record = {
            "passed": not failures, "failures": failures,
            "dtype": settings.dtype, "tolerance": tolerance, "prompts": len(prompts),
            "full_precision_reference": full,
            "four_bit_reference": quantized,  # informative: what a QLoRA run trained on
            "generation": generation,
            "reloaded_with": "AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained",
            "files": sorted(p.name for p in staging.iterdir()) + [VERIFICATION_RECORD],
            "source": {"base_model": chain.base_model, "adapters": [str(a) for a in chain.adapters],
                       "trained_in_4bit": chain.load_in_4bit, "fingerprint": fingerprint(chain, settings.dtype)},
        }
        atomic_write_json(staging / VERIFICATION_RECORD, record)
        if failures:
            failed = output.with_name(f"{output.name}.failed")
            publish(staging, failed)
            raise MergeError(f"merge did not verify ({'; '.join(failures)}); folder kept at {failed}")
        publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("merged model in %s: max |logit diff| %.3g (tolerance %g), 4-bit reference %s, call parsed: %s",
             output, full["max_abs_diff"], tolerance,
             f"{quantized['max_abs_diff']:.3g}" if quantized else "n/a", generation.get("parsed"))
    return {"merged_dir": str(output), **record}


def _original_vocab(chain: Chain, model_cfg) -> int:
    """The base's vocabulary before resizing to the tokenizer (read from its config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(chain.base_model, revision=model_cfg.revision,
                                        trust_remote_code=model_cfg.trust_remote_code)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return text_config.vocab_size
