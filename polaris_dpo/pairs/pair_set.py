"""A pair set folder on disk (`pairs/<name>/`: train.jsonl, test.jsonl, stats.json, README.md, categories.png):
`PairSetWriter` builds it beside the target and swaps it in; `load` reads one."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from polaris_dpo.atomic import atomic_write_json, atomic_write_text
from polaris_dpo.pairs.card import card, write_chart


class PairSetWriter:
    """Builds `pairs/<name>/` in a temporary folder beside it; `commit` swaps it in, an error leaves no trace."""

    def __init__(self, target: str | Path, examples_per_category: int = 2):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        self.files = {split: open(self.staging / f"{split}.jsonl", "w", encoding="utf-8") for split in ("train", "test")}
        self.counts: dict[str, Counter] = {"train": Counter(), "test": Counter()}
        self.chosen_sources: Counter = Counter()
        self.sources: Counter = Counter()
        self.examples: dict[str, list[dict]] = defaultdict(list)
        self.examples_per_category = examples_per_category

    def add(self, row: dict, split: str) -> None:
        self.files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
        self.counts[split][row["category"]] += 1
        self.chosen_sources[row["chosen_source"]] += 1
        self.sources[row["source"]] += 1
        if len(self.examples[row["category"]]) < self.examples_per_category:
            self.examples[row["category"]].append(row)

    def by_category(self) -> dict[str, int]:
        return dict(self.counts["train"] + self.counts["test"])

    def commit(self, stats: dict, info: dict) -> Path:
        for f in self.files.values():
            f.close()
        stats = {**stats, "pairs": {split: dict(c) for split, c in self.counts.items()},
                 "chosen_sources": dict(self.chosen_sources), "prompt_sources": dict(self.sources)}
        atomic_write_json(self.staging / "stats.json", stats, sort_keys=True)
        atomic_write_text(self.staging / "README.md", card(self.target.name, stats, info, self.examples))
        write_chart(self.staging / "categories.png", self.counts, self.target.name)
        self.staging.chmod(0o755)  # mkdtemp makes it private; a pair set is shared like any folder
        backup = None
        if self.target.exists():
            backup = self.target.with_name(f".{self.target.name}.old-{self.staging.name[-8:]}")
            self.target.rename(backup)
        self.staging.rename(self.target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return self.target

    def abort(self) -> None:
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def load(path: str | Path):
    """The pair set as a `datasets.DatasetDict` (train, test)."""
    import datasets

    path = Path(path)
    files = {split: str(path / f"{split}.jsonl") for split in ("train", "test")
             if (path / f"{split}.jsonl").is_file() and (path / f"{split}.jsonl").stat().st_size > 0}
    if "train" not in files:
        raise FileNotFoundError(f"{path}: no pair set here (train.jsonl missing or empty)")
    return datasets.load_dataset("json", data_files=files)
