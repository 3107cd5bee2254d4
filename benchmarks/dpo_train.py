"""One timed DPO run in its own process: `python -m benchmarks.dpo_train SPEC_JSON` (started by dpo_overhead,
ref_precompute and gpu; not a benchmark of its own).

side "ours": stage dpo exactly as a user runs it (`polaris_dpo.stages.dpo.run(cfg)` on a config composed from
conf/ with overrides), with a step timer added to the trainer it builds.
side "plain": the script TRL's documentation shows (AutoModelForCausalLM + LoraConfig + DPOConfig + DPOTrainer),
given the same settings.

SPEC keys: side, result (JSON file written at the end), run_dir, pairs, model_dir, tokenizer_dir, overrides
(config overrides for ours: `model=<name>` and whatever else differs, such as the hardware), settings (below), warmup (steps left out of the steady
state), quantize (plain side: QLoRA 4-bit, as the GPU benchmark asks), new_tokens (plain side: the format's tokens,
trained as ours trains them by default: the whole LM head, a tied one with the embedding; absent: LoRA only).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

START = time.perf_counter()

SETTINGS = {  # every knob both sides are given explicitly (TRL's own defaults differ from ours for some)
    "max_steps": 20,  # optimiser steps (-1: epochs)
    "num_train_epochs": 1.0,
    "learning_rate": 5e-4,
    "per_device_train_batch_size": 4,
    "max_length": 512,
    "beta": 0.1,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lr_scheduler_type": "cosine",
    "logging_steps": 5,
    "gradient_checkpointing": False,  # TRL's DPOConfig defaults to True, our config to False: both set
    "precompute_ref_log_probs": False,
    "seed": 42,
    "threads": None,  # torch intra-op threads (None: torch's default), the same on both sides
    "device": "cpu",
    "bf16": False,
    "extra": {},  # more DPOConfig fields given to both sides (ours through dpo.trl)
}


def ours_overrides(spec: dict, s: dict) -> list[str]:
    extra = [f"+dpo.trl.{key}={json.dumps(value)}" for key, value in s["extra"].items()]
    return [
        "stage=dpo", *spec.get("overrides", []),
        f"dpo.pairs={spec['pairs']}",
        f"dpo.max_steps={s['max_steps']}", f"dpo.num_train_epochs={s['num_train_epochs']}",
        f"dpo.learning_rate={s['learning_rate']}", f"dpo.per_device_train_batch_size={s['per_device_train_batch_size']}",
        f"dpo.max_length={s['max_length']}", f"dpo.beta={s['beta']}",
        f"train.lora.r={s['lora_r']}", f"train.lora.alpha={s['lora_alpha']}", f"train.lora.dropout={s['lora_dropout']}",
        f"dpo.lr_scheduler_type={s['lr_scheduler_type']}", "dpo.warmup_ratio=0",
        f"dpo.logging_steps={s['logging_steps']}", "dpo.save_steps=1000000",
        f"train.gradient_checkpointing={s['gradient_checkpointing']}",
        f"dpo.precompute_ref_log_probs={s['precompute_ref_log_probs']}",
        f"hardware.bf16={s['bf16']}", f"seed={s['seed']}", "wandb.mode=disabled", *extra,
    ]


def run_ours(spec: dict, s: dict, timer) -> dict:
    from polaris_dpo.compose import compose
    from polaris_dpo.stages import dpo

    cfg = compose(ours_overrides(spec, s), run_dir=spec["run_dir"])
    built = {}
    original_build = dpo.build

    def build_with_timer(*args, **kwargs):
        setup = original_build(*args, **kwargs)
        setup["trainer"].add_callback(timer)
        built["trainer"] = setup["trainer"]
        return setup

    dpo.build = build_with_timer
    try:
        result = dpo.run(cfg)
    finally:
        dpo.build = original_build
    return {"trainer": built["trainer"], "metrics": result["metrics"]}


def run_plain(spec: dict, s: dict, timer) -> dict:
    """The script from TRL's DPO documentation, with our settings written into it."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer

    from polaris_dpo import training

    model_kwargs = {}
    if spec.get("quantize"):
        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if s["bf16"] else torch.float32)
    if s["bf16"] and s["device"] == "cuda":  # on CPU bf16 is autocast over float32 weights, as ours does
        model_kwargs["dtype"] = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):  # the format's tokens are new to the base
        model.resize_token_embeddings(len(tokenizer))
    train_dataset = load_dataset("json", data_files=str(Path(spec["pairs"]) / "train.jsonl"), split="train")

    new_token_ids = sorted(tokenizer.convert_tokens_to_ids(spec.get("new_tokens", [])))
    # the LoraConfig fields stage dpo's default adapter has (the whole LM head; a tied one with the embedding)
    new_tokens = training.new_token_modules("head", model, new_token_ids)
    peft_config = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                             target_modules="all-linear", task_type="CAUSAL_LM", **new_tokens)
    training_args = DPOConfig(
        output_dir=str(Path(spec["run_dir"]) / "plain"),
        max_steps=s["max_steps"], num_train_epochs=s["num_train_epochs"], learning_rate=s["learning_rate"],
        per_device_train_batch_size=s["per_device_train_batch_size"], max_length=s["max_length"], beta=s["beta"],
        lr_scheduler_type=s["lr_scheduler_type"], warmup_steps=0, logging_steps=s["logging_steps"],
        save_steps=1000000, gradient_checkpointing=s["gradient_checkpointing"],
        precompute_ref_log_probs=s["precompute_ref_log_probs"], seed=s["seed"], report_to="none",
        bf16=s["bf16"], use_cpu=s["device"] == "cpu", **s["extra"],
    )
    trainer = DPOTrainer(model=model, args=training_args, train_dataset=train_dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[timer])
    trainer.train()
    trainer.save_model()
    return {"trainer": trainer, "metrics": {}}


def main(spec: dict) -> dict:
    import torch

    from benchmarks import _support

    settings = {**SETTINGS, **spec.get("settings", {})}
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    cuda = settings["device"] == "cuda" and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_after_import = _support.current_rss_mib()
    timer = _support.step_timer()
    begin, begin_cpu = time.perf_counter(), time.process_time()
    outcome = (run_ours if spec["side"] == "ours" else run_plain)(spec, settings, timer)
    end, end_cpu = time.perf_counter(), time.process_time()
    trainer = outcome["trainer"]
    steps = timer.step_seconds()
    cpu_steps = timer.step_seconds(clock=1)
    history = [e for e in trainer.state.log_history if "loss" in e]
    model = trainer.model
    result = {
        "side": spec["side"],
        "settings": settings,
        "global_step": trainer.state.global_step,
        "step_seconds": steps,
        "seconds_per_step": _support.steady(steps, spec.get("warmup", 3)),
        "cpu_step_seconds": cpu_steps,
        "cpu_seconds_per_step": _support.steady(cpu_steps, spec.get("warmup", 3)),
        "setup_seconds": (timer.train_begin[0] if timer.train_begin else end) - begin,  # model, data, trainer, precompute
        "train_seconds": end - (timer.train_begin[0] if timer.train_begin else begin),
        "run_seconds": end - begin,
        "run_cpu_seconds": end_cpu - begin_cpu,
        "process_seconds": end - START,
        "peak_rss_mib": _support.peak_rss_mib(),
        "rss_after_import_mib": rss_after_import,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "tokens_seen": trainer.state.num_input_tokens_seen or None,
        "train_rows": len(trainer.train_dataset),
    }
    _support.write_result(spec["result"], result)
    return result


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
