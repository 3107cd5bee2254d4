"""What stages sft and dpo share: model preparation (LoRA, QLoRA, full, Spectrum), trainer arguments
from the config, checkpoints for resume, and the output folder with its `training.json`.

Thin on purpose: PEFT builds the adapters, TRL the trainers; this module only turns the config into
their arguments and closes the known traps (4-bit gradients on CPU, new special tokens untrained or
lost, a reference model that silently becomes the raw base).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from polaris_dpo import formats, models, spectrum, tracking
from polaris_dpo.atomic import atomic_write_json
from polaris_dpo.config import command_line_keys
from polaris_dpo.lineage import TRAINING_JSON, read_training_json

log = logging.getLogger(__name__)


def format_config(cfg, model_path: str | None = None):
    """The format section to render with: the one a stage recorded in the model folder's training.json
    (SFT's format travels with its output), else `format`. A `format` set on the command line that
    contradicts the recorded one is an error naming both."""
    recorded = (read_training_json(model_path) or {}).get("format") if model_path else None
    if not recorded:
        return cfg.format
    configured = plain(cfg.format)
    differs = {k: configured.get(k) for k, v in recorded.items() if configured.get(k) != v}
    if differs and format_set_on_command_line():
        raise ValueError(f"format: the model {model_path} was trained with format {recorded} (its training.json), "
                         f"but the command line sets {', '.join(f'format.{k}={c!r}' for k, c in differs.items())}; "
                         "drop the format override, or train the model in that format")
    if differs:
        log.info("format: using %s as recorded in %s/%s", recorded.get("name"), model_path, TRAINING_JSON)
    return OmegaConf.merge(cfg.format, recorded)


def load_format(cfg, model_path: str | None = None):
    """The chat format of `format_config`."""
    return formats.from_config(format_config(cfg, model_path))


def format_set_on_command_line() -> bool:
    return any(key == "format" or key.startswith("format.") for key in command_line_keys())


def plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


# ----------------------------------------------------------------------------- trainer arguments


def precision_args(hardware_cfg) -> dict:
    """`use_cpu`, `bf16`, `fp16` from the hardware section (TRL defaults to bf16, which fails on CPU alone)."""
    return {"use_cpu": hardware_cfg.device == "cpu", "bf16": bool(hardware_cfg.bf16), "fp16": bool(hardware_cfg.fp16)}


# keys of the sft / dpo sections that are TRL config fields of the same name
STAGE_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
              "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "max_length",
              "logging_steps", "save_steps")


# TRL fields that other config keys set: a `<stage>.trl` entry for one of them names the key to use instead
SET_ELSEWHERE = {"seed": "seed", "bf16": "hardware.bf16", "fp16": "hardware.fp16", "use_cpu": "hardware.device",
                 "gradient_checkpointing": "train.gradient_checkpointing",
                 "activation_checkpointing": "train.gradient_checkpointing", "output_dir": "run_dir",
                 "report_to": "wandb.mode", "run_name": "wandb (the run's name)"}
STAGE_SPECIFIC = {"sft": ("assistant_only_loss", "packing", "neftune_noise_alpha"),
                  "dpo": ("beta", "loss_type", "loss_weights", "label_smoothing", "precompute_ref_log_probs")}


def check_passthrough(config_cls, stage_cfg, stage: str) -> dict:
    """`<stage>.trl` as a dict, checked before any model loads: every key is a field of the TRL config
    class, and none is set by another key of ours (`dpo.trl.beta`: set `dpo.beta`)."""
    import dataclasses
    import difflib

    passthrough = plain(stage_cfg.trl) or {}
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for key in sorted(passthrough):
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" (did you mean {stage}.trl.{close[0]}?)" if close else ""
            raise ValueError(f"{stage}.trl.{key}: not a field of trl.{config_cls.__name__}{hint}")
        ours = (f"{stage}.{key}" if key in STAGE_KEYS or key in STAGE_SPECIFIC.get(stage, ())
                else SET_ELSEWHERE.get(key))
        if ours:
            raise ValueError(f"{stage}.trl.{key}: set {ours} instead (a key has one place)")
    return passthrough


def trainer_args(config_cls, cfg, stage_cfg, output_dir: Path, stage: str, **stage_specific):
    """A TRL config (SFTConfig / DPOConfig): our keys first, then `<stage>.trl` passed through unchanged."""
    stage_keys = {key: stage_cfg[key] for key in STAGE_KEYS}  # `<stage>.trl` must not set them again
    passthrough = check_passthrough(config_cls, stage_cfg, stage)
    args = dict(
        output_dir=str(output_dir / "checkpoints"),
        **stage_keys,
        save_strategy="steps",
        # transformers' new name; it sets `args.gradient_checkpointing` too, which TRL's trainers read
        activation_checkpointing=bool(cfg.train.gradient_checkpointing),
        seed=cfg.seed,
        report_to=tracking.report_to(cfg),
        run_name=tracking.run_name(cfg, stage),
        dataloader_num_workers=0,
        **precision_args(cfg.hardware),
        **stage_specific,
    )
    token = passthrough.pop("hub_token", None)
    if token:
        # the trainer pickles its arguments into every checkpoint: the token goes through the
        # environment, where the Hub client reads it, and never into training_args.bin
        os.environ["HF_TOKEN"] = str(token)
    args.update(passthrough)
    ratio = args.pop("warmup_ratio")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{stage}.warmup_ratio={ratio}: a share of the steps, in [0, 1)")
    if "warmup_steps" not in passthrough:
        args["warmup_steps"] = ratio  # transformers 5 reads a float < 1 in warmup_steps as a ratio
    return config_cls(**args)



def last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = output_dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def resume_from(cfg, output_dir: Path) -> str | None:
    """The checkpoint to continue from when `train.resume=true` (None: start fresh, with a note why)."""
    if not cfg.train.resume:
        return None
    checkpoint = last_checkpoint(output_dir)
    log.info("train.resume: %s", f"continuing from {checkpoint}" if checkpoint else "no checkpoint yet, starting fresh")
    return checkpoint


# ----------------------------------------------------------------------------- model preparation


def format_token_ids(tokenizer, fmt) -> list[int]:
    """Rows of the format's special tokens: new to the base model, so their embeddings and LM-head rows train."""
    ids = tokenizer.convert_tokens_to_ids(list(fmt.special_tokens))
    missing = [t for t, i in zip(fmt.special_tokens, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"format {fmt.name!r}: tokens {missing} are not in the tokenizer")
    return sorted(set(ids))


def embedding_names(model) -> tuple[str, str]:
    """Module names (last component) of the input embeddings and the LM head."""
    def leaf(module):
        for name, m in model.named_modules():
            if m is module:
                return name.split(".")[-1]
        raise ValueError("module not found in model")

    return leaf(model.get_input_embeddings()), leaf(model.get_output_embeddings())


def has_tied_head(model) -> bool:
    """The LM head shares its weight with the input embeddings (SmolLM2, Qwen2.5-0.5B, Llama-3.2, Gemma)."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def lora_config(cfg, model, tokenizer, fmt, target_modules=None):
    """PEFT LoraConfig from `train.lora`, with the format's new tokens made trainable (`new_token_modules`)."""
    from peft import LoraConfig

    lora = cfg.train.lora
    targets = list(target_modules) if target_modules is not None else list(lora.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    token_ids = format_token_ids(tokenizer, fmt) if fmt.special_tokens else []
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                      task_type="CAUSAL_LM", **new_token_modules(lora.new_tokens, model, token_ids))


NEW_TOKENS = ("rows", "head")


def new_token_modules(new_tokens: str, model, token_ids: list[int]) -> dict:
    """LoraConfig fields through which the new tokens' embedding and LM-head rows learn.

    rows: PEFT's trainable tokens on exactly those rows of the embedding and of an untied head (a tied
    head shares the embedding's). head: the whole LM head trains (modules_to_save), as most recipes do;
    with a tied head that is the whole shared matrix, kept tied by PEFT.
    """
    if new_tokens not in NEW_TOKENS:
        raise ValueError(f"train.lora.new_tokens={new_tokens!r}: expected one of {' | '.join(NEW_TOKENS)}")
    if not token_ids:
        return {}
    embed, head = embedding_names(model)
    tied = has_tied_head(model)
    if new_tokens == "rows":
        return {"trainable_token_indices": {embed: token_ids} if tied else {embed: token_ids, head: token_ids}}
    if tied:
        return {"modules_to_save": [embed, head], "ensure_weight_tying": True}
    return {"trainable_token_indices": {embed: token_ids}, "modules_to_save": [head]}


def readable_head_rows(model) -> bool:
    """Let TRL's fused LM head read a head whose new-token rows train through PEFT's trainable tokens.

    TRL computes log-probs from `lm_head.weight` and `lm_head.bias` without calling the head. PEFT's
    TrainableTokensWrapper answers `weight` with the trained rows merged in, even with the adapter
    disabled (the DPO reference), and has no `bias` (PEFT issue #3649). The head's class is swapped for
    one that answers both as its own forward does. Returns whether the head needed it.
    """
    from peft.utils.other import TrainableTokensWrapper

    readable = fused_readable_tokens_head()
    head = model.get_output_embeddings()
    if not isinstance(head, TrainableTokensWrapper) or isinstance(head, readable):
        return False
    head.__class__ = readable
    return True


@functools.cache
def fused_readable_tokens_head():
    from peft.utils.other import TrainableTokensWrapper

    class FusedReadableTokensHead(TrainableTokensWrapper):
        """A TrainableTokensWrapper head whose `weight` and `bias` are those its forward uses."""

        def _hasattr_wrapped(self, name, modules):
            return name in ("weight", "bias")

        def _getattr_wrapped(self, name, modules):
            layer = modules["token_adapter"]
            if name == "bias":
                return getattr(layer.base_layer, "bias", None)
            if layer.disable_adapters or layer.merged or not layer.active_adapters:
                return layer.base_layer.weight
            return layer.get_merged_weights(layer.active_adapters)

    return FusedReadableTokensHead


def check_finetune(cfg) -> str:
    finetune = cfg.train.finetune
    if finetune not in ("lora", "full"):
        raise ValueError(f"train.finetune={finetune!r}: expected lora | full")
    if finetune == "full" and cfg.model.load_in_4bit:
        raise ValueError("train.finetune=full cannot train a 4-bit base: use train.finetune=lora (QLoRA)")
    spectrum_apply(cfg)
    return finetune


def spectrum_apply(cfg) -> str:
    """How Spectrum's chosen modules train: `train.spectrum.apply`, where auto follows `train.finetune`."""
    apply, finetune = cfg.train.spectrum.apply, cfg.train.finetune
    if apply not in ("auto", "full", "lora"):
        raise ValueError(f"train.spectrum.apply={apply!r}: expected auto | full | lora")
    if apply == "auto":
        return finetune
    if cfg.train.spectrum.top_fraction and apply != finetune:
        raise ValueError(f"train.spectrum.apply={apply} needs train.finetune={apply} (or train.spectrum.apply=auto)")
    return apply


def prepare_for_kbit(cfg, model):
    """QLoRA: peft's preparation (norms in fp32, input grads), and exact 4-bit gradients on CPU."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(cfg.train.gradient_checkpointing))
    if cfg.hardware.device == "cpu":
        models.keep_cpu_4bit_gradients_exact(model)
    return model


def new_trainable(cfg, model, tokenizer, fmt, output_dir: Path, model_id: str):
    """(model, peft_config) for training from `model`: a fresh LoRA, QLoRA, full, or Spectrum-restricted.

    With LoRA the trainer wraps the model (peft_config); with full fine-tuning the model's own
    parameters train (all, or with Spectrum only the chosen modules plus embeddings and LM head).
    """
    finetune = check_finetune(cfg)
    if cfg.model.load_in_4bit:
        model = prepare_for_kbit(cfg, model)
    chosen = None
    if cfg.train.spectrum.top_fraction:
        chosen = spectrum.select(model, cfg.train.spectrum, model_id=model_id, output_dir=output_dir)
    if finetune == "full":
        if chosen is not None:
            spectrum.freeze_all_but(model, chosen)
        return model, None
    return model, lora_config(cfg, model, tokenizer, fmt, chosen)


def trainable_summary(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_parameters": trainable, "total_parameters": total}


# ----------------------------------------------------------------------------- outputs


def save_model(trainer, tokenizer, output_dir: Path) -> None:
    """Adapter (or full model) and tokenizer with the format's tokens and chat template into `output_dir`.

    Written into a staging folder first and moved into place, so a folder with training.json is complete.
    Checkpoints stay in `output_dir/checkpoints` for resume.
    """
    staging = output_dir / ".saving"
    main = trainer.accelerator.is_main_process
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # writes on the main process only
    if main:
        tokenizer.save_pretrained(str(staging))
        shutil.rmtree(staging / "ref", ignore_errors=True)  # TRL's frozen DPO reference: the SFT adapter, no output
        for item in staging.iterdir():
            target = output_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        staging.rmdir()
    trainer.accelerator.wait_for_everyone()


def final_metrics(trainer) -> dict:
    """The last logged training values (loss, rewards, margins...) and the run summary."""
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    metrics = {k: v for k, v in history[-1].items() if isinstance(v, (int, float))} if history else {}
    summary = next((e for e in reversed(trainer.state.log_history) if "train_runtime" in e), {})
    metrics.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    if history:
        metrics["final_loss"] = history[-1]["loss"]
        metrics["first_loss"] = history[0]["loss"]
    elif "train_loss" in summary:  # fewer steps than logging_steps: only the run's mean loss was logged
        metrics["final_loss"] = summary["train_loss"]
    metrics["global_step"] = trainer.state.global_step
    return metrics


def loss_curve(trainer) -> list[list[float]]:
    """[step, loss] of every logged training step (`<stage>.logging_steps` apart)."""
    return [[entry["step"], entry["loss"]] for entry in trainer.state.log_history if "loss" in entry and "step" in entry]


def write_training_json(output_dir: Path, record: dict) -> None:
    atomic_write_json(output_dir / TRAINING_JSON, record, sort_keys=True)
