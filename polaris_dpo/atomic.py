"""Atomic file writes (text, JSON, JSONL): a temp file in the same folder, then a rename, so a crash leaves the
old file or the new one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; each process gets its own temp file, so concurrent writers
    (DDP ranks) cannot collide. The file is readable by others, like a plain write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data, *, sort_keys: bool = False) -> Path:
    """`data` as indented JSON (UTF-8 kept, other values by str) with a final newline, written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False, default=str)
                             + "\n")


def atomic_write_jsonl(path: str | Path, rows, before: str = "") -> Path:
    """One JSON object a line (UTF-8 kept), after `before` (lines already there), written atomically."""
    return atomic_write_text(path, before + "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
