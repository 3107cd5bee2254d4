"""A model's lineage: the full-precision base and the adapters that make it, read from the `training.json` a
training stage writes into its output folder, and the one way to fold adapters into a base.

`training.json` records {"stage", "base_model", "adapter_chain": [adapter folders, in order], "finetune",
"load_in_4bit", "format", ...}. The model a stage trained is the base with every adapter of the chain but
the last folded in (in full precision), and the last one applied. An adapter folder without a record names
its base in adapter_config.json; any other folder or hub id is a base model itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TRAINING_JSON = "training.json"
ADAPTER_CONFIG = "adapter_config.json"


class LineageError(ValueError):
    """A training.json or adapter folder that does not say what the model is made of; the message names the file."""


@dataclass
class Lineage:
    base_model: str  # hub id or folder, loaded in full precision for folding
    adapters: list[Path] = field(default_factory=list)  # folded in order; the last is the trained one


def read_training_json(folder: str | Path) -> dict | None:
    """The folder's training.json as written (None when there is none)."""
    path = Path(folder) / TRAINING_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LineageError(f"{path}: not valid JSON ({err})") from None


def read_record(folder: str | Path) -> dict | None:
    """read_training_json, with the lineage fields it must have."""
    record = read_training_json(folder)
    if record is None:
        return None
    for key in ("base_model", "adapter_chain"):
        if key not in record:
            raise LineageError(f"{Path(folder) / TRAINING_JSON}: missing field {key!r}")
    return record


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(adapter: str | Path) -> str:
    """The base an adapter folder names in its adapter_config.json."""
    config = Path(adapter) / ADAPTER_CONFIG
    if not config.is_file():
        raise LineageError(f"{adapter}: not an adapter folder (no {ADAPTER_CONFIG})")
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise LineageError(f"{config}: missing field 'base_model_name_or_path'")
    return base


def resolve_adapter(entry: str, record_dir: Path) -> Path:
    """An adapter_chain entry: as written when it exists, else relative to the folder of the record."""
    path = Path(entry).expanduser()
    if path.is_dir() or path.is_absolute():
        return path
    return record_dir / path


def from_record(folder: str | Path, record: dict) -> Lineage:
    folder = Path(folder)
    adapters = [resolve_adapter(entry, folder) for entry in record["adapter_chain"]]
    for adapter in adapters:
        if not is_adapter_dir(adapter):
            raise LineageError(f"{folder / TRAINING_JSON}: adapter_chain entry {str(adapter)!r} has no {ADAPTER_CONFIG}")
    return Lineage(base_model=record["base_model"], adapters=adapters)


def of(path: str | Path) -> Lineage:
    """The lineage of a stage output (its training.json), an adapter folder, or a base model."""
    record = read_record(path)
    if record is not None:
        return from_record(path, record)
    if is_adapter_dir(path):
        return Lineage(base_model=adapter_base(path), adapters=[Path(path)])
    return Lineage(base_model=str(path))


def fold(model, adapters: list[Path], keep_last_unmerged: bool = False):
    """Apply each adapter in order, merging it in; the last one stays a live adapter when asked."""
    from peft import PeftModel

    for i, adapter in enumerate(adapters):
        model = PeftModel.from_pretrained(model, str(adapter))
        if keep_last_unmerged and i == len(adapters) - 1:
            break
        model = model.merge_and_unload(safe_merge=True)
    model.eval()
    return model
