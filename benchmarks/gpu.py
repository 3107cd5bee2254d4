"""DPO with QLoRA on a randomly initialised model of Mistral-7B's shape (no download), sequence length 2048:
tokens per second, peak GPU memory and model FLOPs utilisation; stage dpo against the plain TRL script with the
same settings, and stage dpo with the memory options that work here turned on.

    python -m benchmarks gpu                      # in the runner: only where a CUDA GPU is present
    python -m benchmarks.gpu                      # the same, printed
    python -m benchmarks.gpu --shape tiny         # CPU smoke test of the whole code path (small Mistral, no 4-bit)

Needs only torch, transformers, peft, trl, bitsandbytes (and liger-kernel for the Liger variant, when installed).

Model FLOPs utilisation (MFU) counts the FLOPs the model needs, not those the hardware spends. With the base frozen
(LoRA/QLoRA) a training token costs a forward F and a backward that computes activation gradients only (about F;
the weight gradients of the frozen base are never computed, LoRA's own are negligible), so 2F for the policy, plus
F for the reference forward unless reference log-probs are precomputed:
    F = 2 * N_matmul + 2 * n_layers * seq_len * d_model   (per token; N_matmul = parameters in matmuls, LM head
                                                           included, embeddings excluded; the second term is
                                                           causal attention: QK^T and AV over seq_len/2 keys)
    model FLOPs per token = 3F (reference every step) or 2F (precomputed; the one-off precompute pass is left out)
    MFU = tokens/s * model FLOPs per token / peak dense bf16 FLOP/s of the GPU
Activation recomputation under gradient checkpointing is not counted (that would be hardware FLOPs utilisation).
The commonly quoted 6 * N * tokens/s assumes full fine-tuning (weight gradients too) and overstates LoRA's work.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from benchmarks import _support

PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12,
                   "A10G": 70e12, "L4": 121e12, "RTX 4090": 165e12}  # dense, no sparsity
WARMUP = 2


def shapes(shape: str, vocab: int) -> dict:
    if shape == "mistral-7b":
        return {}  # MistralConfig's defaults are Mistral-7B's shape
    if shape == "tiny":
        return {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": vocab, "max_position_embeddings": 4096}
    raise ValueError(f"--shape {shape!r}: expected mistral-7b | tiny")


def random_model(target: Path, shape: str, tokenizer_dir: Path, device: str) -> dict:
    """Save a randomly initialised Mistral of the given shape (and the tokenizer) into `target`."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = MistralConfig(**shapes(shape, len(tokenizer)), pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = MistralForCausalLM(config).to(dtype)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    embed = model.get_input_embeddings().weight.numel()
    info = {"parameters": model.num_parameters(), "matmul_parameters": model.num_parameters() - embed,
            "layers": config.num_hidden_layers, "d_model": config.hidden_size, "vocab": config.vocab_size}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return info


def long_pairs(source: Path, tokenizer_dir: Path, seq_len: int, rows: int, scratch: Path) -> Path:
    """Pairs whose prompt fills most of `seq_len` tokens: demo pairs with their first user turn lengthened."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    base = [json.loads(line) for line in (source / "train.jsonl").open() if line.strip()]
    filler_text = " ".join(m.get("content") or "" for row in base[:50] for m in row["prompt"] if m.get("content"))
    filler_ids = tokenizer(filler_text, add_special_tokens=False)["input_ids"]
    target = scratch / f"pairs-{seq_len}"
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for row in base:
        tools = json.loads(row["tools"]) if row.get("tools") else None
        used = max(len(tokenizer(tokenizer.apply_chat_template(row["prompt"] + row[side], tools=tools, tokenize=False),
                                 add_special_tokens=False)["input_ids"]) for side in ("chosen", "rejected"))
        room = int(seq_len * 0.9) - used
        if room < 0:  # TRL drops rows whose prompt alone fills max_length: keep only rows that fit
            continue
        prompt = [dict(m) for m in row["prompt"]]
        first_user = next((m for m in prompt if m["role"] == "user"), None)
        if first_user is not None and room > 0:
            first_user["content"] = tokenizer.decode(filler_ids[:room]) + "\n\n" + (first_user["content"] or "")
        out.append(json.dumps({**row, "prompt": prompt}))
        if len(out) == rows:
            break
    if not out:
        raise ValueError(f"{source}: no pair fits in {seq_len} tokens")
    (target / "train.jsonl").write_text("\n".join(out) + "\n")
    return target


def variants(device: str) -> list[tuple[str, str, dict]]:
    """(name, side, settings changes): the plain TRL baseline, ours, and ours with each memory option."""
    found = [("plain TRL, QLoRA", "plain", {}), ("ours (stage dpo), QLoRA", "ours", {}),
             ("ours + precompute_ref_log_probs", "ours", {"precompute_ref_log_probs": True}),
             ("ours + gradient checkpointing", "ours", {"gradient_checkpointing": True})]
    if device == "cuda" and importlib.util.find_spec("liger_kernel") is not None:
        found.append(("ours + Liger kernels", "ours", {"extra": {"use_liger_kernel": True}}))
    return found


def peak_flops(device_name: str) -> float | None:
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in device_name), None)


def measure(shape: str = "mistral-7b", seq_len: int = 2048, steps: int = 6, batch: int = 2) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    quantize = device == "cuda"
    if shape == "mistral-7b" and device == "cpu":
        raise SystemExit("the mistral-7b shape needs a CUDA GPU: use --shape tiny to smoke-test on CPU")
    scratch = _support.scratch_dir()
    pairs, origin = _support.pair_set(scratch)
    _, tokenizer_dir = _support.model_folders(scratch, "tiny")
    model_dir = scratch / f"random-{shape}"
    info = random_model(model_dir, shape, tokenizer_dir, device)
    pairs = long_pairs(pairs, model_dir, seq_len, rows=max(batch * (steps + 1), 8), scratch=scratch)
    hardware = ["hardware=single_gpu", "model.dtype=bfloat16"] if device == "cuda" else ["hardware=cpu"]
    overrides = ["model=tiny", f"model.name_or_path={model_dir}", "model.tiny=null", f"model.load_in_4bit={quantize}", *hardware]
    base = {"max_steps": steps, "max_length": seq_len, "per_device_train_batch_size": batch, "device": device,
            "bf16": device == "cuda", "logging_steps": 1, "threads": None if device == "cuda" else 2,
            "extra": {"include_num_input_tokens_seen": "non_padding"}}
    gpu_name = torch.cuda.get_device_name(0) if device == "cuda" else "none (CPU smoke test)"
    peak = peak_flops(gpu_name) if device == "cuda" else None
    rows, results = [], {}
    for i, (name, side, change) in enumerate(variants(device)):
        settings = {**base, **change, "extra": {**base["extra"], **change.get("extra", {})}}
        spec = {"side": side, "result": str(scratch / f"v{i}.json"), "run_dir": str(scratch / f"v{i}"),
                "pairs": str(pairs), "model_dir": str(model_dir), "tokenizer_dir": str(model_dir),
                "overrides": overrides, "quantize": quantize, "warmup": WARMUP, "settings": settings}
        try:
            result = _support.child("dpo_train", spec, timeout=1800)
        except RuntimeError as err:
            rows.append((f"{name}: failed", str(err).strip().splitlines()[-1][:200], ""))
            continue
        results[name] = result
        name = name if quantize else name.replace("QLoRA", "LoRA")
        tokens_per_step = (result["tokens_seen"] or 0) / max(result["global_step"], 1)
        tokens_per_s = tokens_per_step / result["seconds_per_step"]
        passes = 2 if settings.get("precompute_ref_log_probs") else 3
        flops_per_token = passes * (2 * info["matmul_parameters"] + 2 * info["layers"] * seq_len * info["d_model"])
        rows.append((f"{name}: tokens per second", round(tokens_per_s, 1), "tokens/s"))
        rows.append((f"{name}: seconds per step", round(result["seconds_per_step"], 3), "s"))
        if result["peak_gpu_mib"] is not None:
            rows.append((f"{name}: peak GPU memory", round(result["peak_gpu_mib"]), "MiB"))
        else:
            rows.append((f"{name}: peak memory (RSS)", round(result["peak_rss_mib"]), "MiB"))
        if peak:
            rows.append((f"{name}: MFU", round(100 * tokens_per_s * flops_per_token / peak, 2), "%"))
    ours, plain = results.get("ours (stage dpo), QLoRA"), results.get("plain TRL, QLoRA")
    if ours and plain:
        rows.append(("ratio ours / plain (seconds per step)",
                     round(_support.ratio(ours["seconds_per_step"], plain["seconds_per_step"]), 3), "x"))
        memory = "peak_gpu_mib" if ours["peak_gpu_mib"] is not None else "peak_rss_mib"
        rows.append(("ratio ours / plain (peak memory)", round(_support.ratio(ours[memory], plain[memory]), 3), "x"))
    notes = [
        f"GPU: {gpu_name}; model: random {shape} shape ({info['parameters'] / 1e6:,.1f} M parameters), "
        f"{'4-bit NF4 (QLoRA), bf16 compute' if quantize else 'float32, no 4-bit (CPU smoke test)'}; "
        f"sequence length {seq_len}, batch {batch} pairs, {steps} steps (median after {WARMUP}), LoRA r=16 all-linear",
        f"pairs: {origin}, each prompt lengthened to ~90 % of {seq_len} tokens",
        "MFU formula: see the module docstring (3F per token with the reference forward every step, 2F precomputed; "
        f"F = 2 N_matmul + 2 L s d); peak dense bf16 of the GPU: {peak / 1e12:,.0f} TFLOP/s" if peak else
        "MFU: not computed (no GPU, or the GPU's peak is not in PEAK_BF16_FLOPS)",
        "padding_free is not measured: TRL 1.16 disables it in DPOTrainer (it falls back to padding with a warning)",
        "Liger kernels: " + ("measured" if any("Liger" in n for n in results) else
                             "not installed here (pip install liger-kernel), so not measured"),
        "ours trains the LM head and the new tokens' embedding rows too (format special tokens); plain TRL's "
        "LoRA does not: part of any memory difference",
    ]
    return {"title": f"GPU: DPO with QLoRA on a random {shape}-shaped model, sequence length {seq_len}",
            "rows": rows, "notes": notes}


def run(quick: bool) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU here; the GPU figures are still to be measured (the code path is smoke-"
                           "tested on CPU with `python -m benchmarks.gpu --shape tiny`)"}
    return measure(steps=4 if quick else 6)


def main() -> None:
    parser = argparse.ArgumentParser(description="DPO with QLoRA on a random Mistral-7B-shaped model")
    parser.add_argument("--shape", default="mistral-7b", choices=["mistral-7b", "tiny"])
    parser.add_argument("--seq-len", type=int, default=None, help="default: 2048 (mistral-7b), 1024 (tiny)")
    parser.add_argument("--steps", type=int, default=None, help="default: 6 (mistral-7b), 4 (tiny)")
    parser.add_argument("--batch", type=int, default=2, help="pairs per step")
    args = parser.parse_args()
    tiny = args.shape == "tiny"
    result = measure(args.shape, args.seq_len or (1024 if tiny else 2048), args.steps or (4 if tiny else 6), args.batch)
    for label, value, unit in result["rows"]:
        print(f"{label}: {value} {unit}")
    for note in result["notes"]:
        print(f"- {note}")


if __name__ == "__main__":
    main()
