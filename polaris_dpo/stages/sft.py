"""stage sft: TRL's SFTTrainer on conversations, loss on assistant turns only, LoRA / QLoRA / full.

    python -m polaris_dpo stage=sft [data=glaive] [model.load_in_4bit=true] [sft.packing=true] [sft.trl.packing_strategy=bfd]

Reads the train split of `data` (and of `sft.datasets` before it, mixed or one after another), renders each
conversation with the format's chat template (set on the tokenizer, `{% generation %}` markers make
the assistant mask: calls included, tool definitions and results excluded), trains, and writes
`<run_dir>/<sft.output>/`: adapter or model, tokenizer, training.json.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from polaris_dpo import lineage, models, tracking, training
from polaris_dpo.preemption import PreemptionCallback

log = logging.getLogger(__name__)


def data_sections(cfg) -> list:
    """Each `sft.datasets` entry (a partial data section merged over `data`), then `data` itself."""
    return [*(OmegaConf.merge(cfg.data, extra) for extra in cfg.sft.datasets), cfg.data]


def read_train_conversations(cfg, data_cfg) -> list[dict]:
    """The train side of one data section (the held-out side is stage eval's)."""
    from polaris_dpo import readers

    conversations = readers.read(data_cfg, cfg.run_dir)
    train, _held_out = readers.split(conversations, data_cfg.eval_fraction, data_cfg.split_seed)
    return list(train)


def to_rows(conversations) -> list[dict]:
    """Rows TRL renders with the chat template: messages in storage form, tools as a JSON string."""
    from polaris_dpo import messages

    rows = []
    for conv in conversations:
        rows.append({"messages": messages.to_storage(conv["messages"]), "tools": json.dumps(conv.get("tools") or [])})
    return rows


def phases(cfg, conversations=None) -> list[list[dict]]:
    """Row lists trained one after another: one (all data mixed) or one per data section (sequential)."""
    if conversations is not None:
        return [to_rows(conversations)]
    per_section = [to_rows(read_train_conversations(cfg, section)) for section in data_sections(cfg)]
    for section, rows in zip(data_sections(cfg), per_section, strict=True):
        if not rows:
            raise ValueError(f"sft: data section {section.get('path') or section.get('hub_id')} gave no train rows")
    if cfg.sft.schedule == "sequential":
        return per_section
    if cfg.sft.schedule != "mix":
        raise ValueError(f"sft.schedule={cfg.sft.schedule!r}: expected mix | sequential")
    return [[row for rows in per_section for row in rows]]


def run(cfg, output_dir: str | Path | None = None, model_path: str | None = None,
        conversations: list[dict] | None = None) -> dict:
    """Train; return {"output_dir", "base_model", "adapter_chain", "metrics", "wall_time_s"}.

    output_dir: instead of <run_dir>/<sft.output>; model_path: a full model to start from instead of
    the configured base; conversations: train on these instead of reading `data`.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    start = time.time()
    training.check_passthrough(SFTConfig, cfg.sft, "sft")
    fmt = training.load_format(cfg)
    out = Path(output_dir or Path(cfg.run_dir) / cfg.sft.output)
    out.mkdir(parents=True, exist_ok=True)
    base_path = model_path or models.model_path_for(cfg, fmt)
    if lineage.is_adapter_dir(base_path):
        raise ValueError(f"sft: {base_path} is an adapter; start SFT from a full model (merge it first)")
    row_phases = phases(cfg, conversations)

    tokenizer = models.load_tokenizer(base_path, fmt, cfg.model.revision, cfg.model.trust_remote_code)
    model = models.load_model(base_path, cfg.model, cfg.hardware, tokenizer)
    model, peft_config = training.new_trainable(cfg, model, tokenizer, fmt, out, base_path)
    log.info("sft: %s fine-tuning of %s%s, %d phase(s) (%s rows)", cfg.train.finetune, base_path,
             " in 4-bit (QLoRA)" if cfg.model.load_in_4bit else "", len(row_phases),
             "+".join(str(len(rows)) for rows in row_phases))

    trainer = None
    for index, rows in enumerate(row_phases):
        phase_dir = out if len(row_phases) == 1 else out / f"phase-{index}"
        args = training.trainer_args(
            SFTConfig, cfg, cfg.sft, phase_dir, "sft",
            assistant_only_loss=cfg.sft.assistant_only_loss,
            packing=cfg.sft.packing,
            neftune_noise_alpha=cfg.sft.neftune_noise_alpha,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=peft_config if index == 0 else None,
                             callbacks=[PreemptionCallback()])
        training.readable_head_rows(trainer.model)
        trainer.train(resume_from_checkpoint=training.resume_from(cfg, phase_dir))
        model = trainer.model
        tracking.finish()

    training.save_model(trainer, tokenizer, out)
    metrics = {**training.final_metrics(trainer), **training.trainable_summary(model)}
    lora = cfg.train.finetune == "lora"
    record = {
        "stage": "sft",
        "base_model": base_path if lora else str(out),
        "adapter_chain": [str(out)] if lora else [],
        "finetune": cfg.train.finetune,
        "load_in_4bit": bool(cfg.model.load_in_4bit),
        "format": training.plain(cfg.format),
        "spectrum": training.plain(cfg.train.spectrum) if cfg.train.spectrum.top_fraction else None,
        "rows": [len(rows) for rows in row_phases],
        "schedule": cfg.sft.schedule,
        "metrics": metrics,
        "final_loss": metrics.get("final_loss"),
        "loss_curve": training.loss_curve(trainer),
    }
    if trainer.accelerator.is_main_process:
        training.write_training_json(out, record)
    wall = time.time() - start
    log.info("sft: done in %.0f s, final loss %s, saved to %s", wall, metrics.get("final_loss"), out)
    return {"output_dir": str(out), "base_model": record["base_model"], "adapter_chain": record["adapter_chain"],
            "metrics": metrics, "wall_time_s": wall}
