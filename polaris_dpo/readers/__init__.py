"""Readers: one module per source format, each turning raw rows into canonical conversations.

    reading = polaris_dpo.readers.read(cfg.data, run_dir)
    for conversation in reading: ...          # streamed; unusable rows go to <run_dir>/<data.quarantine>
    reading.counts -> {"read": N, "kept": K, "quarantined": Q}   # N == K + Q, logged at the end
    reading.by_file -> {file: counts}   # a file that yields nothing or mostly quarantined rows is a WARNING
    train, held_out = polaris_dpo.readers.split(conversations, eval_fraction, seed)

A conversation (see docs/architecture.md): {"id", "source", "row", "messages", "tools",
"acceptable", "preferences"}.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from polaris_dpo.messages import FieldError, lone_surrogate_field, normalize_conversation
from polaris_dpo.readers.base import (
    DATA_SUFFIXES,
    DataFileError,
    RawRow,
    Reader,
    RowError,
    data_files,
    dataset_rows,
    file_rows,
    skipped_files,
)

log = logging.getLogger(__name__)

READERS = ("openai", "sharegpt", "polaris", "bfcl", "when2call", "demo")  # modules of this package


def get(name: str, data_cfg) -> Reader:
    if name not in READERS:
        raise ValueError(f"data.reader: {name!r} is not a reader here; choose one of {', '.join(READERS)}")
    return importlib.import_module(f"polaris_dpo.readers.{name}").Reader(data_cfg)


class Reading:
    """The conversations of `data_cfg`, streamed; counts and quarantine reasons fill in as it goes.

    Iterating again reads the data again (and rewrites the quarantine file).
    """

    def __init__(self, data_cfg, run_dir: str | Path | None = None):
        self.cfg = data_cfg
        self.reader = get(data_cfg.reader, data_cfg)
        quarantine = data_cfg.get("quarantine") or "quarantine.jsonl"
        self.quarantine_path = Path(run_dir) / quarantine if run_dir is not None else None
        self.counts = _no_counts()
        self.reasons: Counter[str] = Counter()  # "field: reason" -> rows quarantined for it
        self.by_file: dict[str, dict[str, int]] = {}  # file -> its counts (an empty file too)
        self.first_problems: dict[str, str] = {}  # file -> "row R, field: reason" of its first quarantined row
        self.skipped: list[Path] = []  # files in data.path's folder not read: their suffix is not .json / .jsonl
        self.finished = False  # whether the last iteration read to the end

    def __iter__(self) -> Iterator[dict]:
        self.counts, self.reasons, self.by_file, self.first_problems = _no_counts(), Counter(), {}, {}
        self.finished = False
        quarantine = _AtomicJsonl(self.quarantine_path)
        seen: dict[str, tuple] = {}  # id -> (file, row) where it was first read: an id names one conversation
        try:
            for raw in self._raw_rows():
                self._count(raw.file, "read")
                conversation, problem = self._convert(raw)
                if conversation is not None and conversation["id"] in seen:
                    file, row = seen[conversation["id"]]
                    conversation, problem = None, ("id", f"duplicate id {conversation['id']!r}: already read at "
                                                         f"{file or 'the dataset'} row {row}")
                if conversation is not None:
                    seen[conversation["id"]] = (raw.file, raw.row)
                    self._count(raw.file, "kept")
                    yield conversation
                else:
                    self._count(raw.file, "quarantined")
                    field, reason = problem
                    self.reasons[f"{field}: {_reason_kind(reason)}"] += 1
                    self.first_problems.setdefault(raw.file, f"row {raw.row}, {field}: {reason}")
                    quarantine.write({"file": raw.file, "row": raw.row, "field": field, "reason": reason})
        except Exception:
            quarantine.abort()
            raise
        finally:
            quarantine.close()
        self.finished = True
        log.info("%s", self.summary())
        self._warn_about_files()

    def summary(self) -> str:
        c = self.counts
        where = f" (quarantine: {self.quarantine_path})" if self.quarantine_path and c["quarantined"] else ""
        return f"data.reader={self.cfg.reader}: read {c['read']}, kept {c['kept']}, quarantined {c['quarantined']}{where}"

    def nothing_kept(self) -> str | None:
        """Why a read that ran to its end kept no conversation: the files, the counts, the quarantine file and
        the first quarantine reason (None when it kept some, or was not read to its end)."""
        c = self.counts
        if not self.finished or c["kept"]:
            return None
        files = list(self.by_file) or [str(self.cfg.get("hub_id") or self.cfg.get("path"))]
        where = ", ".join(files[:3]) + (f" and {len(files) - 3} more file(s)" if len(files) > 3 else "")
        if not c["read"]:
            return f"data.reader={self.cfg.reader}: {where} holds no rows (empty)"
        file, problem = next(iter(self.first_problems.items()))
        return (f"data.reader={self.cfg.reader}: no usable row in {where}: read {c['read']}, kept 0, "
                f"quarantined {c['quarantined']} ({self._quarantine_note()}); first reason: {file} {problem}")

    def _count(self, file: str, outcome: str) -> None:
        """One more row `outcome` ("read", "kept" or "quarantined"), in all and for its file."""
        self.counts[outcome] += 1
        self.by_file.setdefault(file, _no_counts())[outcome] += 1

    def _quarantine_note(self) -> str:
        """Where the quarantined rows went, for a message."""
        return f"quarantine: {self.quarantine_path}" if self.quarantine_path else "no quarantine file: no run_dir"

    def _warn_about_files(self) -> None:
        """A WARNING for each file that yielded nothing or mostly quarantined rows, and one naming the files of
        data.path's folder that were skipped (their suffix is not read)."""
        for file, n in self.by_file.items():
            if not n["read"]:
                log.warning("data.reader=%s: %s holds no rows (empty): nothing read from it", self.cfg.reader, file)
            elif not n["kept"] or 2 * n["quarantined"] > n["read"]:
                log.warning("data.reader=%s: %s: %s: read %d, kept %d, quarantined %d (%s; first reason: %s)",
                            self.cfg.reader, file, "no usable row" if not n["kept"] else "most rows quarantined",
                            n["read"], n["kept"], n["quarantined"], self._quarantine_note(),
                            self.first_problems[file])
        if self.skipped:
            log.warning("data.path: skipped %d file(s) in %s whose suffix is not read (only %s are): %s",
                        len(self.skipped), self.skipped[0].parent, " / ".join(DATA_SUFFIXES),
                        ", ".join(p.name for p in self.skipped))

    def _raw_rows(self) -> Iterator[RawRow]:
        limit = self.cfg.get("limit")
        files = data_files(self.cfg, self.reader.wants)
        self.skipped = skipped_files(self.cfg) if files is not None else []
        if files is None:
            self.reader.start_file(None)
            rows: Iterable[RawRow] = dataset_rows(self.cfg)
        else:
            rows = _rows_of_files(self.reader, files, self.by_file)
        for count, raw in enumerate(rows):
            if limit is not None and count >= limit:
                return
            yield raw

    def _convert(self, raw: RawRow) -> tuple[dict | None, tuple[str, str] | None]:
        if raw.data is None:
            return None, ("row", raw.error or "unreadable")
        try:
            conversation = self.reader.convert(raw.data)
            conversation.setdefault("source", raw.source)
            conversation.setdefault("row", raw.row)
            conversation.setdefault("id", f"{raw.source}:{raw.row}")
            conversation = normalize_conversation(conversation)
            if not any(m["role"] == "assistant" for m in conversation["messages"]):
                raise RowError("messages", "no assistant turn: nothing to learn from or predict")
            bad_text = lone_surrogate_field(conversation)
            if bad_text is not None:
                raise RowError(bad_text, "holds a lone UTF-16 surrogate (an unpaired \\uD800-\\uDFFF escape), "
                                         "which UTF-8 cannot encode")
        except DataFileError:
            raise
        except FieldError as err:  # RowError, or messages.normalize_* naming the field
            return None, (err.field, err.reason)
        except ValueError as err:
            return None, ("row", str(err))
        conversation["id"] = str(conversation["id"])
        return conversation, None


def read(data_cfg, run_dir: str | Path | None = None) -> Reading:
    """The conversations `data_cfg` (the `data:` config section) describes; see `Reading`."""
    return Reading(data_cfg, run_dir)


def read_all(data_cfg, run_dir: str | Path | None = None) -> tuple[list[dict], dict]:
    """All conversations in a list, and the counts."""
    reading = read(data_cfg, run_dir)
    conversations = list(reading)
    return conversations, dict(reading.counts)


def is_held_out(conversation_id: str, eval_fraction: float, seed: int) -> bool:
    """Whether a conversation belongs to the eval side: a hash of (seed, id), so it streams and is stable."""
    digest = hashlib.sha256(f"{seed}:{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def split(conversations: Iterable[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval) by conversation id: a conversation is never on both sides."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"data.eval_fraction: must be between 0 and 1, got {eval_fraction}")
    train, held_out = [], []
    for conversation in conversations:
        (held_out if is_held_out(conversation["id"], eval_fraction, seed) else train).append(conversation)
    return train, held_out


def _rows_of_files(reader: Reader, files: list[Path], by_file: dict[str, dict[str, int]]) -> Iterator[RawRow]:
    """The rows of each file in turn; a file read to its end without a row gets zero counts in `by_file`."""
    stems = Counter(file.stem for file in files)
    for file in files:
        reader.start_file(file)
        # default ids are "<source>:<row>": x.json and x.jsonl in one folder must not share them
        yield from file_rows(file, file.name if stems[file.stem] > 1 else file.stem)
        by_file.setdefault(str(file), _no_counts())


def _no_counts() -> dict[str, int]:
    """Counts before any row."""
    return {"read": 0, "kept": 0, "quarantined": 0}


def _reason_kind(reason: str) -> str:
    """The reason without the quoted data that follows it, to count reasons by kind."""
    return reason.split(": ", 1)[0].split(" (", 1)[0]


class _AtomicJsonl:
    """A JSONL file written to a temporary name and renamed into place on close (nothing when path is None)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.handle = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            # a lone surrogate in a field name or reason is written as its JSON escape
            self.handle = self.tmp.open("w", encoding="utf-8", errors="backslashreplace")

    def write(self, record: dict) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.tmp.unlink(missing_ok=True)


__all__ = ["DataFileError", "READERS", "Reader", "Reading", "RowError", "get", "is_held_out", "read", "read_all",
           "split"]
