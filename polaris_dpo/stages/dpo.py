"""stage dpo: TRL's DPOTrainer on a pair set, with the SFT model as the reference.

    python -m polaris_dpo stage=dpo dpo.pairs=pairs/demo dpo.sft_model=outputs/sft/<run>/sft

The reference is never silently the raw base. `dpo.reference`:
- continue_adapter: keep training the SFT adapter; TRL copies it into a frozen `ref` adapter, which
  is the reference (this stage also copies the new-token rows, which TRL's copy misses).
- merge_sft: fold the SFT adapter(s) into the base, put a fresh adapter on top; the reference is
  that model with the adapter off, i.e. the SFT model.
Writes `<run_dir>/<dpo.output>/`: adapter or model, tokenizer, training.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from polaris_dpo import lineage, models, tracking, training
from polaris_dpo.pairs.order import (
    CALL_OVER_TEXT,
    PAIR_ORDERS,
    TEXT_OVER_CALL,
    call_balanced_order,
    call_direction,
)
from polaris_dpo.preemption import PreemptionCallback

log = logging.getLogger(__name__)

REFERENCES = ("continue_adapter", "merge_sft")
PAIR_COLUMNS = ("prompt", "chosen", "rejected", "tools", "category")  # the trainer's collator leaves out `category`


def load_pairs(folder: str | Path):
    """The train split of a pair set folder, as TRL's conversational preference rows."""
    from datasets import load_dataset

    train = Path(folder) / "train.jsonl"
    if not train.is_file():
        raise FileNotFoundError(f"dpo.pairs: {train} not found (a pair set folder holds train.jsonl, see pairs/)")
    dataset = load_dataset("json", data_files={"train": str(train)}, split="train")
    missing = [c for c in PAIR_COLUMNS[:3] if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{train}: pair rows lack {missing}")
    return dataset.remove_columns([c for c in dataset.column_names if c not in PAIR_COLUMNS])


def pair_order_args(dpo_cfg) -> dict:
    """The trainer's sampling for `dpo.pair_order`: call_balanced reads the pairs in the order it sets."""
    if dpo_cfg.pair_order == "shuffled":
        return {}
    if "train_sampling_strategy" in (dpo_cfg.trl or {}):
        raise ValueError(f"dpo.pair_order={dpo_cfg.pair_order} reads the pairs in order; it cannot be combined with "
                         f"dpo.trl.train_sampling_strategy={dpo_cfg.trl['train_sampling_strategy']}")
    return {"train_sampling_strategy": "sequential"}


def in_call_balanced_order(trainer, seed: int):
    """The trainer's pairs in `call_balanced_order`, one block per optimiser step (all devices and accumulated
    batches); every epoch reads the same order."""
    dataset = trainer.train_dataset
    step_size = trainer.get_total_train_batch_size(trainer.args)
    columns = [c for c in ("category", "chosen", "rejected") if c in dataset.column_names]
    directions = [call_direction(row) for row in dataset.select_columns(columns)]
    counts = {d: directions.count(d) for d in (CALL_OVER_TEXT, TEXT_OVER_CALL)}
    log.info("dpo.pair_order=call_balanced: %d call-over-text and %d text-over-call pairs, steps of %d pairs",
             counts[CALL_OVER_TEXT], counts[TEXT_OVER_CALL], step_size)
    return dataset.select(call_balanced_order(directions, step_size, seed))


def copy_adapter_into_ref(model) -> int:
    """Make the `ref` adapter an exact copy of `default`, new-token rows included.

    TRL copies parameters whose names contain `.default.`; trainable-token rows are named
    `...trainable_tokens_delta.default` and would stay at the base model's values.
    """
    copied = 0
    for name, param in model.named_parameters():
        if ".default." in name or name.endswith(".default"):
            ref_name = name.replace(".default.", ".ref.") if ".default." in name else name[: -len("default")] + "ref"
            model.get_parameter(ref_name).data.copy_(param.data)
            copied += 1
    return copied


def build(cfg, output_dir: str | Path | None = None, model_path: str | None = None,
          pairs: str | Path | None = None) -> dict:
    """The DPOTrainer with policy and reference set up, and what training.json records about them."""
    from peft import PeftModel, get_peft_model
    from trl import DPOConfig, DPOTrainer

    training.check_passthrough(DPOConfig, cfg.dpo, "dpo")
    fmt = training.load_format(cfg, model_path or cfg.dpo.sft_model)
    out = Path(output_dir or Path(cfg.run_dir) / cfg.dpo.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.dpo.reference not in REFERENCES:
        raise ValueError(f"dpo.reference={cfg.dpo.reference!r}: expected one of {', '.join(REFERENCES)}")
    if cfg.dpo.pair_order not in PAIR_ORDERS:
        raise ValueError(f"dpo.pair_order={cfg.dpo.pair_order!r}: expected one of {' | '.join(PAIR_ORDERS)}")
    dataset = load_pairs(pairs or cfg.dpo.pairs)

    source = model_path or cfg.dpo.sft_model
    if source is None:
        source = models.model_path_for(cfg, fmt)
        log.warning("dpo: no SFT model given (dpo.sft_model is null): the reference is the RAW BASE %s", source)
    made_of = lineage.of(source)
    base_path, chain = made_of.base_model, [str(adapter) for adapter in made_of.adapters]
    continue_adapter = cfg.dpo.reference == "continue_adapter" and bool(chain)
    fold_in = chain[:-1] if continue_adapter else chain
    tokenizer = models.load_tokenizer(str(source), fmt, cfg.model.revision, cfg.model.trust_remote_code)
    model = models.load_folded(base_path, fold_in, cfg, tokenizer, scratch=out)

    if continue_adapter:
        if cfg.model.load_in_4bit:
            model = training.prepare_for_kbit(cfg, model)
        model = PeftModel.from_pretrained(model, chain[-1], is_trainable=True)
        peft_config = None
        reference = f"the SFT adapter {chain[-1]}, continued (frozen copy 'ref')"
        if cfg.train.spectrum.top_fraction:
            log.warning("dpo: train.spectrum does not apply with dpo.reference=continue_adapter (the adapter is given)")
    else:
        model, peft_config = training.new_trainable(cfg, model, tokenizer, fmt, out, base_path)
        reference = (f"the SFT model ({base_path} + {', '.join(chain)} folded in), fresh adapter on top" if chain
                     else f"the model {base_path} itself ({'adapter off' if peft_config else 'frozen copy'})")
    log.info("dpo: reference model = %s", reference)

    args = training.trainer_args(
        DPOConfig, cfg, cfg.dpo, out, "dpo",
        beta=cfg.dpo.beta,
        loss_type=list(cfg.dpo.loss_type),
        loss_weights=list(cfg.dpo.loss_weights) if cfg.dpo.loss_weights is not None else None,
        label_smoothing=cfg.dpo.label_smoothing,
        precompute_ref_log_probs=cfg.dpo.precompute_ref_log_probs,
        **pair_order_args(cfg.dpo),
    )
    lora = peft_config is not None or continue_adapter
    if peft_config is not None:  # wrapped here, so that the head is readable before TRL's first forward
        model = get_peft_model(model, peft_config)  # (dpo.precompute_ref_log_probs runs one in the constructor)
    training.readable_head_rows(model)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[PreemptionCallback()])
    if cfg.dpo.pair_order == "call_balanced":  # after TRL dropped the rows it cannot train on
        trainer.train_dataset = in_call_balanced_order(trainer, cfg.seed)
    if continue_adapter:
        copy_adapter_into_ref(trainer.model)
    elif peft_config is not None:
        # TRL took the wrapped model for a pretrained adapter and added a frozen copy "ref"; a fresh adapter's
        # reference is the model with it off, which skips the adapter's layers in every reference forward
        trainer.model.delete_adapter("ref")
    record = {
        "stage": "dpo",
        "base_model": base_path if lora else str(out),
        "adapter_chain": [*fold_in, str(out)] if lora else [],
        "reference": reference,
        "reference_mode": cfg.dpo.reference,
        "sft_model": str(source),
        "pairs": str(pairs or cfg.dpo.pairs),
        "pair_rows": len(dataset),
        "finetune": "lora" if lora else "full",
        "load_in_4bit": bool(cfg.model.load_in_4bit),
        "format": training.plain(training.format_config(cfg, str(source))),
        "loss_type": list(cfg.dpo.loss_type),
        "pair_order": cfg.dpo.pair_order,
    }
    return {"trainer": trainer, "tokenizer": tokenizer, "output_dir": out, "record": record}


def run(cfg, output_dir: str | Path | None = None, model_path: str | None = None,
        pairs: str | Path | None = None) -> dict:
    """Train; return {"output_dir", "base_model", "adapter_chain", "reference", "metrics", "wall_time_s"}.

    output_dir: instead of <run_dir>/<dpo.output>; model_path: the SFT output instead of dpo.sft_model;
    pairs: a pair set folder instead of dpo.pairs.
    """
    start = time.time()
    setup = build(cfg, output_dir, model_path, pairs)
    trainer, out, record = setup["trainer"], setup["output_dir"], setup["record"]
    trainer.train(resume_from_checkpoint=training.resume_from(cfg, out))
    tracking.finish()

    training.save_model(trainer, setup["tokenizer"], out)
    metrics = {**training.final_metrics(trainer), **training.trainable_summary(trainer.model)}
    record.update(metrics=metrics, final_loss=metrics.get("final_loss"), loss_curve=training.loss_curve(trainer))
    reference = record["reference"]
    if trainer.accelerator.is_main_process:
        training.write_training_json(out, record)
    wall = time.time() - start
    log.info("dpo: done in %.0f s, final loss %s, margins %s, saved to %s", wall, metrics.get("final_loss"),
             metrics.get("rewards/margins"), out)
    return {"output_dir": str(out), "base_model": record["base_model"], "adapter_chain": record["adapter_chain"],
            "reference": reference, "metrics": metrics, "wall_time_s": wall}
