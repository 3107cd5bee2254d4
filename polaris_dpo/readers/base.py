"""What every reader shares: the row sources (JSON / JSONL files, folders, `datasets` folders, hub ids) and errors.

A reader is a class with `convert(row) -> conversation` for one raw row; it raises `RowError` (the row
goes to the quarantine) or `FieldError` from `polaris_dpo.messages` (the same, the field named in the
message). A file that cannot be parsed at all raises `DataFileError`: the read stops.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polaris_dpo import paths
from polaris_dpo.messages import FieldError

DATA_SUFFIXES = (".jsonl", ".json")


class RowError(FieldError):
    """A row that cannot be used: `field` is where the problem is (dotted path), `reason` what it is."""


class DataFileError(ValueError):
    """A data file (or folder) that cannot be read at all."""


@dataclass
class RawRow:
    file: str  # the file (or dataset folder / hub id) the row comes from
    source: str  # the dataset's name: file stem, folder name or hub id
    row: int  # 0-based index of the row in its file (JSONL: line number - 1)
    data: dict | None  # the parsed row, None when it is not valid JSON
    error: str | None = None  # why `data` is None


class Reader:
    """Base class: a source format. Subclasses implement convert(); `start_file` sees each file first."""

    wants = "the file or folder to read"  # what `data.path` should name, for the message when it is missing

    def __init__(self, data_cfg):
        self.cfg = data_cfg

    def start_file(self, file: Path | None) -> None:
        """Called before the rows of each file (BFCL loads the matching answers here)."""

    def convert(self, row: dict) -> dict:
        raise NotImplementedError


def require(row: dict, key: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """row[key], or RowError naming the field when it is missing (or of the wrong type)."""
    if key not in row or row[key] is None:
        raise RowError(key, "missing required field")
    if kind is not None and not isinstance(row[key], kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RowError(key, f"must be {names}, got {type(row[key]).__name__}")
    return row[key]


# ---------------------------------------------------------------- where rows come from

def data_files(data_cfg, wants: str = Reader.wants) -> list[Path] | None:
    """The JSON / JSONL files `data.path` names (None for a `datasets` folder or a hub id); `wants` says
    what to give when `data.path` is missing."""
    if data_cfg.get("hub_id"):
        return None
    if not data_cfg.get("path"):
        raise DataFileError(f"data.path (or data.hub_id) must be set: {wants}")
    path = paths.resolve(data_cfg.path, data_cfg.get("root"))
    if not path.exists():
        raise DataFileError(f"data.path: {path} does not exist")
    if path.is_file():
        return [path]
    if is_saved_dataset(path):
        return None
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if not files:
        raise DataFileError(f"data.path: folder {path} holds no .json / .jsonl file and is not a saved `datasets` folder")
    return files


def skipped_files(data_cfg) -> list[Path]:
    """The files of `data.path`'s folder that `data_files` leaves out: their suffix is not .json / .jsonl
    (hidden files aside); empty when `data.path` is a file."""
    path = paths.resolve(data_cfg.path, data_cfg.get("root"))
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir()
                  if p.is_file() and p.suffix.lower() not in DATA_SUFFIXES and not p.name.startswith("."))


def is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "dataset_info.json").is_file() and (path / "state.json").is_file())


def file_rows(file: Path, source: str | None = None) -> Iterator[RawRow]:
    """Rows of a JSONL file (streamed line by line), or of a JSON file holding a list or one object.

    A `.jsonl` file is always read line by line (a broken first line is one bad row); another file is
    JSONL when its first non-blank line is a JSON object by itself. A UTF-8 byte order mark is skipped.
    `source` (default: the file's stem) names the dataset in default ids.
    """
    source = source or file.stem
    try:
        handle = file.open(encoding="utf-8-sig")
    except OSError as err:
        raise DataFileError(f"{file}: cannot be opened ({err.strerror})") from None
    with handle:
        try:
            first = handle.readline()
            while first and not first.strip():
                first = handle.readline()
        except UnicodeDecodeError as err:
            raise DataFileError(f"{file}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        if not first:
            return
        if file.suffix.lower() == ".jsonl" or (first.lstrip().startswith("{") and _parses(first)):
            yield from _jsonl_rows(file, source, handle, first)
            return
    yield from _whole_json_rows(file, source)


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except (ValueError, RecursionError):
        return False


def _jsonl_rows(file: Path, source: str, handle, first: str) -> Iterator[RawRow]:
    # the first non-blank line was already read; count the lines before it to keep row == line - 1
    handle.seek(0)
    for index, line in enumerate(handle):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            yield RawRow(str(file), source, index, None, f"line {index + 1} is not valid JSON ({err.msg} at column {err.colno})")
            continue
        except RecursionError:
            yield RawRow(str(file), source, index, None, f"line {index + 1} is JSON nested too deeply")
            continue
        except ValueError as err:  # an integer longer than Python's digit limit
            yield RawRow(str(file), source, index, None, f"line {index + 1} is not usable JSON ({err})")
            continue
        if not isinstance(data, dict):
            yield RawRow(str(file), source, index, None, f"line {index + 1} is a JSON {type(data).__name__}, not an object")
            continue
        yield RawRow(str(file), source, index, data)


def _whole_json_rows(file: Path, source: str) -> Iterator[RawRow]:
    try:
        with file.open(encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{file}: neither JSON nor JSONL ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise DataFileError(f"{file}: JSON nested too deeply") from None
    except UnicodeDecodeError as err:
        raise DataFileError(f"{file}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ValueError as err:  # an integer longer than Python's digit limit
        raise DataFileError(f"{file}: not usable JSON ({err})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataFileError(f"{file}: holds a JSON {type(data).__name__}; expected a list of rows or one row object")
    for index, item in enumerate(data):
        if isinstance(item, dict):
            yield RawRow(str(file), source, index, item)
        else:
            yield RawRow(str(file), source, index, None, f"item {index} is a JSON {type(item).__name__}, not an object")


def dataset_rows(data_cfg) -> Iterator[RawRow]:
    """Rows of a `datasets` folder saved to disk, or of a hub dataset (streamed)."""
    import datasets  # heavy: only when a datasets folder or hub id is read

    if data_cfg.get("hub_id"):
        name = data_cfg.hub_id
        dataset = datasets.load_dataset(name, split=data_cfg.get("hub_split", "train"), streaming=True)
    else:
        path = paths.resolve(data_cfg.path, data_cfg.get("root"))
        name = str(path)
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            split = data_cfg.get("hub_split", "train")
            if split not in loaded:
                raise DataFileError(f"data.hub_split: {path} has no split {split!r} (it has {', '.join(loaded)})")
            loaded = loaded[split]
        dataset = loaded
    source = re.sub(r"[^\w.\-]+", "_", Path(name).name if not data_cfg.get("hub_id") else name)
    for index, item in enumerate(dataset):
        yield RawRow(name, source, index, dict(item))
