"""A folder read with files that yield nothing, mostly quarantined rows, or a suffix not read: a WARNING names each."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from polaris_dpo import readers

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_folder(folder: Path, run_dir: Path, caplog) -> tuple[readers.Reading, list[str]]:
    """Read `folder` with the openai reader; the reading and the WARNING messages it logged."""
    caplog.clear()
    reading = readers.read(OmegaConf.create({"reader": "openai", "path": str(folder), "quarantine": "q.jsonl"}), run_dir)
    with caplog.at_level(logging.INFO, logger="polaris_dpo.readers"):
        list(reading)
    assert reading.counts["read"] == reading.counts["kept"] + reading.counts["quarantined"]
    for n in reading.by_file.values():
        assert n["read"] == n["kept"] + n["quarantined"]
    return reading, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_files_that_yield_nothing_or_are_mostly_quarantined_and_skipped_files_are_warned(tmp_path, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "good.jsonl", [{**GOOD, "id": "a"}, {**GOOD, "id": "b"}])
    write_jsonl(folder / "wrong.jsonl", [{"question": "q", "answer": "a"}, {"question": "r", "answer": "b"}])
    write_jsonl(folder / "mostly.jsonl", [{**GOOD, "id": "c"}, {"question": "q"}, {"question": "r"}])
    (folder / "empty.jsonl").write_text("")
    (folder / "notes.txt").write_text("not data\n")
    (folder / "rows.csv").write_text("a,b\n")
    reading, warnings = read_folder(folder, tmp_path / "run", caplog)
    assert reading.counts == {"read": 7, "kept": 3, "quarantined": 4}
    quarantine = str(tmp_path / "run" / "q.jsonl")

    (wrong,) = [w for w in warnings if "wrong.jsonl" in w]
    assert str(folder / "wrong.jsonl") in wrong and "read 2, kept 0, quarantined 2" in wrong
    assert quarantine in wrong and "messages: missing required field" in wrong
    (mostly,) = [w for w in warnings if "mostly.jsonl" in w]
    assert "most rows quarantined" in mostly and "read 3, kept 1, quarantined 2" in mostly and quarantine in mostly
    (empty,) = [w for w in warnings if "empty.jsonl" in w]
    assert str(folder / "empty.jsonl") in empty and "holds no rows" in empty
    (skipped,) = [w for w in warnings if "skipped" in w]
    assert "notes.txt" in skipped and "rows.csv" in skipped and str(folder) in skipped
    assert not [w for w in warnings if "good.jsonl" in w]
    assert len(warnings) == 4, warnings


def test_a_clean_folder_gives_no_warning(tmp_path, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "one.jsonl", [{**GOOD, "id": "a"}, {**GOOD, "id": "b"}])
    write_jsonl(folder / "two.jsonl", [{**GOOD, "id": "c"}, {"question": "q"}])  # half quarantined: not most
    (folder / ".hidden").write_text("")
    reading, warnings = read_folder(folder, tmp_path / "run", caplog)
    assert reading.counts == {"read": 4, "kept": 3, "quarantined": 1}
    assert warnings == []
    assert reading.nothing_kept() is None


def test_nothing_kept_names_the_file_counts_quarantine_and_first_reason(tmp_path, caplog):
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "q"}, {"question": "r"}])
    reading, _ = read_folder(wrong, tmp_path / "run", caplog)
    message = reading.nothing_kept()
    assert str(wrong) in message and "read 2, kept 0, quarantined 2" in message
    assert str(tmp_path / "run" / "q.jsonl") in message and "row 0, messages: missing required field" in message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    reading, warnings = read_folder(empty, tmp_path / "run", caplog)
    assert f"{empty} holds no rows" in reading.nothing_kept()
    assert any(str(empty) in w for w in warnings)
