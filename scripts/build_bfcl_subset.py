"""Build the bundled BFCL subset (polaris_dpo/assets/bfcl/) that the default job scores before and after
training, to show forgetting: every k-th question of three BFCL v4 categories, with their possible answers
and BFCL's licence.

    python scripts/build_bfcl_subset.py [--source ../shared/data/bfcl] [--per-category 40]

Deterministic: the same source gives the same files (a test checks the bundled copy against it).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ("simple_python", "live_simple", "irrelevance")  # irrelevance: the right answer is no call
TARGET = REPO / "polaris_dpo" / "assets" / "bfcl"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def every_kth(rows: list[dict], count: int) -> list[dict]:
    step = max(1, len(rows) // count)
    return rows[::step][:count]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build(source: Path, per_category: int) -> dict[str, str]:
    """{relative path: text} of the subset."""
    files: dict[str, str] = {}
    for category in CATEGORIES:
        name = f"BFCL_v4_{category}.json"
        questions = every_kth(read_jsonl(source / name), per_category)
        files[name] = jsonl(questions)
        answers_file = source / "possible_answer" / name
        if answers_file.is_file():
            answers = {row["id"]: row for row in read_jsonl(answers_file)}
            files[f"possible_answer/{name}"] = jsonl([answers[q["id"]] for q in questions])
    files["LICENSE_gorilla_Apache-2.0.txt"] = (source / "LICENSE_gorilla_Apache-2.0.txt").read_text(encoding="utf-8")
    files["SOURCE.txt"] = (
        (source / "SOURCE.txt").read_text(encoding="utf-8").strip() + "\n"
        f"subset: every k-th question of {', '.join(CATEGORIES)} ({per_category} each), built by "
        "scripts/build_bfcl_subset.py\n")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "bfcl")
    parser.add_argument("--per-category", type=int, default=40)
    args = parser.parse_args()
    files = build(args.source, args.per_category)
    shutil.rmtree(TARGET, ignore_errors=True)
    for relative, text in files.items():
        path = TARGET / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files into {TARGET}")


if __name__ == "__main__":
    main()
