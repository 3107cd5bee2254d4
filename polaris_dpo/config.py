"""Structured configs: the schema every `conf/` file and command-line override is checked against.

Each dataclass is one section of the config (`model.*`, `dpo.*`, ...). Hydra merges the YAML files
of `conf/` onto this schema in struct mode, so a key that is not declared here, or a value of the
wrong type, fails at start with a message naming the key. Every field has a one-line comment; the
YAML files in `conf/` repeat them for users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

FAILURE_CATEGORIES = [
    "missed_call",
    "unwanted_call",
    "wrong_function",
    "wrong_arguments",
    "wrong_call_count",
    "malformed_call",
    "text_around_call",
    "bad_spacing",
]
CATEGORIES = ["ok", *FAILURE_CATEGORIES]
STAGES = ["pipeline", "sft", "mine", "dpo", "eval", "merge"]


@dataclass
class StageConfig:
    name: str = "pipeline"  # the job to run: pipeline | sft | mine | dpo | eval | merge


@dataclass
class TinyModelConfig:
    vocab_size: int = 2048  # BPE vocabulary trained on the bundled text; the format's special tokens come on top
    hidden_size: int = 256  # width of the tiny Llama
    intermediate_size: int = 688  # MLP width
    num_hidden_layers: int = 4  # transformer blocks
    num_attention_heads: int = 4  # attention heads
    num_key_value_heads: int = 4  # key/value heads (fewer than heads gives grouped-query attention)
    max_position_embeddings: int = 2048  # longest sequence the tiny model accepts
    init_seed: int = 0  # seed of the random initial weights
    tie_word_embeddings: bool = False  # share the input embeddings with the LM head (as SmolLM2, Qwen2.5-0.5B, Llama-3.2 do)


@dataclass
class ModelConfig:
    name_or_path: str = "tiny-llama"  # hub id or local folder; with `tiny` set, the name of the locally built model
    revision: str | None = None  # hub revision (branch, tag or commit) of name_or_path
    gguf_file: str | None = None  # a GGUF checkpoint (path, or <package>/<file> in an installed package), converted once into a cached folder; when absent, name_or_path is loaded
    dtype: str = "auto"  # weights dtype: auto (from hardware) | float32 | bfloat16 | float16
    load_in_4bit: bool = False  # QLoRA: load the base in 4-bit NF4 with bitsandbytes
    bnb_4bit_quant_type: str = "nf4"  # 4-bit quantisation type: nf4 | fp4
    bnb_4bit_use_double_quant: bool = True  # quantise the quantisation constants too (saves ~0.4 bit/param)
    attn_implementation: str | None = "sdpa"  # eager | sdpa | flash_attention_2 | null (library default)
    trust_remote_code: bool = False  # allow model code from the hub (off unless you trust the repo)
    tiny: TinyModelConfig | None = None  # set: build this tiny model locally (cached) instead of downloading
    cache_dir: str = "${oc.env:POLARIS_DPO_CACHE,.cache/polaris_dpo}"  # where locally built models are cached


@dataclass
class FormatConfig:
    name: str = "polaris"  # prompt format: polaris | functionary | chatml_tools | openchat | vicuna | native
    fn_role: str = "fn"  # polaris: role of function results in the prompt (fn as in the seed, tool later)
    arguments_as_string: bool = False  # polaris: write call arguments as a JSON string instead of an object
    config_options: dict[str, str] = field(default_factory=dict)  # polaris: extra `## Configuration` lines, e.g. {"Current date": "2026-11-22"}
    version: str = "v2"  # functionary: v2 | v1
    call_syntax: str = "hermes"  # native: how the model writes calls: hermes (<tool_call>) | mistral ([TOOL_CALLS])
    template: str | None = None  # native: the model's Jinja chat template, a file with one, or a tokenizer folder (null: bundled Hermes-style)


@dataclass
class DataConfig:
    reader: str = "sharegpt"  # source format: openai | sharegpt | polaris | bfcl | when2call | demo
    root: str | None = None  # folder that relative `path` and `answers` are resolved against
    path: str | None = None  # file (JSON / JSONL), folder of files, or a `datasets` folder saved to disk
    answers: str | None = None  # bfcl: the possible_answer file matching `path`
    hub_id: str | None = None  # a hub dataset id instead of `path` (needs network)
    hub_split: str = "train"  # split of hub_id to read
    limit: int | None = None  # read at most this many rows (null: all)
    eval_fraction: float = 0.2  # share of conversations held out for eval (split by conversation, never by turn)
    split_seed: int = 0  # seed of the train/eval split
    quarantine: str = "quarantine.jsonl"  # file in the run directory that receives unreadable rows with reasons


@dataclass
class HardwareConfig:
    name: str = "cpu"  # preset name: cpu | single_gpu | multi_gpu | fsdp_qlora | deepspeed_zero3
    device: str = "cpu"  # cpu | cuda
    bf16: bool = False  # train in bfloat16 mixed precision
    fp16: bool = False  # train in float16 mixed precision
    compute_dtype: str = "float32"  # dtype of 4-bit compute and of weights when model.dtype=auto
    accelerate_config: str | None = None  # accelerate config file for `accelerate launch --config_file`
    num_processes: int = 1  # processes (GPUs) the accelerate config starts
    torch_threads: int | None = None  # torch intra-op threads on CPU (null: torch's default)


@dataclass
class LoraConfig:
    r: int = 16  # rank of the LoRA update
    alpha: int = 32  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = 0.05  # dropout on the LoRA input
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # modules that get adapters; all-linear = every linear but the head
    new_tokens: str = "head"  # how the format's new tokens learn: head (the whole LM head; tied: the whole shared matrix) | rows (only their rows of the embedding and LM head)


@dataclass
class SpectrumConfig:
    top_fraction: float = 0.0  # train only this share of each module type, ranked by SNR (0: Spectrum off)
    apply: str = "auto"  # auto: as train.finetune | full: fine-tune the chosen modules fully | lora: put LoRA only on them
    cache_dir: str = "${model.cache_dir}/spectrum"  # scans are cached per model here


@dataclass
class TrainConfig:
    finetune: str = "lora"  # lora (QLoRA when model.load_in_4bit) | full
    lora: LoraConfig = field(default_factory=LoraConfig)  # LoRA settings, used when finetune=lora
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)  # Spectrum / laser partial freezing
    resume: bool = False  # continue from the last checkpoint in the output directory
    gradient_checkpointing: bool = False  # recompute activations in backward to save memory


@dataclass
class SFTStageConfig:
    output: str = "sft"  # subfolder of the run directory that receives the model or adapter
    learning_rate: float = 2e-4  # peak learning rate
    num_train_epochs: float = 1.0  # epochs over the training data (ignored when max_steps > 0)
    max_steps: int = -1  # stop after this many optimiser steps (-1: use epochs)
    per_device_train_batch_size: int = 8  # sequences per device per step
    gradient_accumulation_steps: int = 1  # micro-batches per optimiser step
    lr_scheduler_type: str = "cosine"  # transformers scheduler name
    warmup_ratio: float = 0.03  # share of steps spent warming up
    max_length: int = 1024  # truncate rendered conversations to this many tokens
    packing: bool = False  # TRL packing of several conversations into one sequence
    neftune_noise_alpha: float | None = None  # TRL NEFTune noise (null: off)
    assistant_only_loss: bool = True  # loss on assistant turns only (calls included; tools and results excluded)
    logging_steps: int = 10  # log every N steps
    save_steps: int = 100  # checkpoint every N steps (resume uses the newest)
    trl: dict[str, Any] = field(default_factory=dict)  # any other trl.SFTConfig field, passed through unchanged
    datasets: list[dict[str, Any]] = field(default_factory=list)  # more data sections (keys of `data`, merged over it) trained before / with `data`
    schedule: str = "mix"  # mix: all sections shuffled together | sequential: sft.datasets in order, then `data` (Polaris: code, then calls)


@dataclass
class DPOStageConfig:
    output: str = "dpo"  # subfolder of the run directory that receives the adapter or model
    pairs: str = "${assets:pairs/demo}"  # pair set folder (from stage mine; default: the bundled pairs/demo)
    sft_model: str | None = None  # SFT output (adapter or model folder) that is both start and reference (null: model.name_or_path)
    reference: str = "continue_adapter"  # continue_adapter: keep training the SFT adapter, reference = frozen copy | merge_sft: fold SFT in, new adapter
    beta: float = 0.1  # DPO temperature: higher keeps the policy closer to the reference
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])  # sigmoid | ipo | hinge | robust | apo_zero | sft (RPO mix), several allowed
    loss_weights: list[float] | None = None  # weight of each loss_type entry (null: all 1)
    label_smoothing: float = 0.0  # conservative DPO / robust label noise
    pair_order: str = "shuffled"  # shuffled: the trainer draws pairs at random | call_balanced: every step holds as many call-over-text as text-over-call pairs (polaris_dpo/pairs/order.py)
    precompute_ref_log_probs: bool = False  # compute reference log-probs once before training
    learning_rate: float = 5e-5  # peak learning rate
    num_train_epochs: float = 1.0  # epochs over the pairs (ignored when max_steps > 0)
    max_steps: int = -1  # stop after this many optimiser steps (-1: use epochs)
    per_device_train_batch_size: int = 4  # pairs per device per step
    gradient_accumulation_steps: int = 1  # micro-batches per optimiser step
    lr_scheduler_type: str = "cosine"  # transformers scheduler name
    warmup_ratio: float = 0.0  # share of steps spent warming up
    max_length: int = 1024  # truncate prompt + completion to this many tokens
    logging_steps: int = 10  # log every N steps
    save_steps: int = 100  # checkpoint every N steps (resume uses the newest)
    trl: dict[str, Any] = field(default_factory=dict)  # any other trl.DPOConfig field, passed through unchanged


@dataclass
class JudgeConfig:
    strings: str = "bfcl"  # string argument comparison: exact | bfcl (case, spaces, punctuation folded) | loose (also substring)
    check_types: bool = True  # an argument of the wrong JSON type is wrong_arguments (an int is accepted for a float)
    check_spacing: bool = True  # judge text answers for spacing errors (bad_spacing)
    call_alone: bool = True  # prose around a correct call is text_around_call


@dataclass
class MineConfig:
    source: str = "model"  # model: sample the model | synthetic: perturb references | when2call: import preference data
    backend: str = "transformers"  # transformers | vllm (needs vllm and a GPU)
    model_path: str | None = None  # model or adapter to sample (null: model.name_or_path, or the SFT output in a pipeline)
    name: str = "mined"  # the pair set is written to <pairs_dir>/<name>/
    overwrite: bool = False  # replace an existing pair set of that name (otherwise an error)
    pairs_dir: str = "pairs"  # folder of pair sets
    samples_per_prompt: int = 4  # samples drawn per prompt
    temperature: float = 0.8  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 256  # longest sample
    batch_size: int = 16  # prompts per generate call
    max_prompts: int | None = None  # mine at most this many prompts (null: all)
    categories: list[str] = field(default_factory=lambda: list(FAILURE_CATEGORIES))  # failure categories that become pairs
    max_pairs_per_prompt: int = 2  # pairs kept per prompt at most
    balance: bool = False  # cap every category at the size of the smallest non-empty one
    max_pairs_per_category: int | None = None  # keep at most this many pairs of each category, spread over the prompts (null: all)
    counterweight: float = 0.2  # share of pairs that reward staying in text (chosen text, rejected unneeded call)
    dedupe: bool = True  # drop exact duplicate pairs
    test_fraction: float = 0.1  # share of prompts whose pairs go to the test split (no prompt on both sides)
    checkpoint_every: int = 64  # prompts between resume checkpoints


@dataclass
class EvalConfig:
    model_path: str | None = None  # model or adapter to evaluate (null: model.name_or_path, or the pipeline's newest)
    predictions: str | None = None  # score this JSONL of {"id", "text"} instead of sampling a model
    compare_to: str | None = None  # a previous eval run directory: report before and after side by side
    samples_per_prompt: int = 4  # samples per prompt (rates are over all samples)
    temperature: float = 0.7  # sampling temperature (0: greedy, one sample)
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 256  # longest sample
    batch_size: int = 16  # prompts per generate call
    max_prompts: int | None = None  # evaluate at most this many prompts (null: all held-out prompts)
    worst_examples: int = 3  # examples per failure category shown in the report


@dataclass
class MergeConfig:
    adapters: list[str] = field(default_factory=list)  # adapter folders folded in order (empty: the chain recorded in source)
    source: str | None = None  # a stage output (its training.json gives base and adapters) or a run folder (its newest dpo, else sft); null: this run's
    output: str = "merged"  # subfolder of the run directory for the merged model
    dtype: str = "float32"  # dtype of the full-precision base the adapters are folded into: float32 | bfloat16
    tolerance: float | None = None  # max |logit difference| accepted (null: 1e-3 for float32, 5e-2 for bfloat16)
    verify_prompts: int = 8  # eval prompts used to compare logits
    verify_max_new_tokens: int = 64  # tokens of the greedy generation checked for a parseable call
    require_call: bool = False  # fail the merge when that generation is not a call that parses (off: reported only)
    max_shard_size: str = "2GB"  # safetensors shard size


@dataclass
class ForgettingConfig:
    root: str | None = "${assets:bfcl}"  # BFCL folder scored greedily before and after training, in the job's format (null: no check)
    max_new_tokens: int = 128  # longest answer to a BFCL question
    max_prompts: int | None = None  # score at most this many BFCL questions (null: all)


@dataclass
class PipelineConfig:
    rounds: int = 1  # mine + DPO rounds after SFT, each with the newest model
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)  # the check on data no one here wrote (BFCL)
    resume: bool = True  # skip steps whose outputs are complete in the run directory
    step_overrides: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in STAGES[1:]})  # per stage (sft|eval|mine|dpo|merge): key=value overrides applied to that step only


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto (online with a key, else off with a notice) | online | offline | disabled
    project: str = "polaris-dpo"  # wandb project
    entity: str | None = None  # wandb team or user (null: your default)
    tags: list[str] = field(default_factory=list)  # tags added to every run


@dataclass
class Config:
    stage: StageConfig = field(default_factory=StageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    data: DataConfig = field(default_factory=DataConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    dpo: DPOStageConfig = field(default_factory=DPOStageConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    mine: MineConfig = field(default_factory=MineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    seed: int = 42  # seed of sampling, training and splits
    run_dir: str = "${hydra:runtime.output_dir}"  # where this run writes everything


PASSTHROUGH = ("sft.trl", "dpo.trl")  # sections that take any TRL config field, without a leading '+'


def schema():
    """The schema as Hydra composes onto it: struct everywhere but the pass-through sections."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(Config)
    for section in PASSTHROUGH:
        OmegaConf.set_struct(OmegaConf.select(node, section), False)
    return node


def command_line_keys() -> set[str]:
    """The config keys the user set on the command line of this run (none outside the CLI)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {o.partition("=")[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


def register() -> None:
    ConfigStore.instance().store(name="polaris_dpo_schema", node=schema())


def declared_section(node):
    """The schema of an optional section whose default is None (e.g. `model.tiny`), or None."""
    import dataclasses

    from omegaconf import OmegaConf

    ref = node._metadata.ref_type
    classes = [a for a in (getattr(ref, "__args__", None) or (ref,)) if dataclasses.is_dataclass(a)]
    return OmegaConf.structured(classes[0]) if classes else None


def check_known_keys(cfg) -> None:
    """Every key of the composed config is declared in the schema: a key added with '+' (`+sft.max_step=3`)
    is refused as a typo would be; free-form sections (`sft.trl`, `format.config_options`, ...) take any key."""
    import difflib

    from omegaconf import DictConfig, OmegaConf

    def walk(node, declared, prefix: str) -> None:
        if not isinstance(node, DictConfig) or not isinstance(declared, DictConfig):
            return
        if declared._is_none():  # an optional section, unset in the schema (`model.tiny`)
            declared = declared_section(declared)
            if declared is None:
                return
        if OmegaConf.get_type(declared) is dict:  # a free-form dict of the schema
            return
        for key in node:
            name = f"{prefix}{key}"
            if key not in declared:
                close = difflib.get_close_matches(str(key), [str(k) for k in declared], n=1)
                hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
                raise ValueError(f"{name}: not a key of the config{hint}; only {', '.join(PASSTHROUGH)} take new keys")
            walk(node._get_node(key), declared._get_node(key), f"{name}.")

    walk(cfg, OmegaConf.structured(Config), "")
