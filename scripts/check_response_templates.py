"""Check each format's response template against its own parse on renders of real assistant turns.

    python scripts/check_response_templates.py                     # bundled data, plus ../shared/data when present
    python scripts/check_response_templates.py --demo-limit 200 --show 3

Prints a Markdown table (format, agreed / well-formed turns, rate, turns skipped) and the disagreements;
exits 1 when a format agrees on fewer than --min-rate of its turns. docs/serving.md quotes its output.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from polaris_dpo import formats
from polaris_dpo.response_agreement import VARIANTS, agreement, bundled_turns, shared_turns

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared data folder (skipped if absent)")
    parser.add_argument("--demo-limit", type=int, default=None, help="demo conversations read (default: all)")
    parser.add_argument("--min-rate", type=float, default=0.99, help="least agreement a format must reach")
    parser.add_argument("--show", type=int, default=5, help="disagreements listed per format")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        turns = bundled_turns(Path(scratch), args.demo_limit)
        sources = "bundled glaive sample, demo conversations, demo pairs, BFCL subset"
        if args.shared.is_dir():
            turns += shared_turns(args.shared, Path(scratch))
            sources += f", {args.shared} (functionary test cases, BFCL references)"
    print(f"{len(turns)} assistant turns from: {sources}\n")
    print("| format | agree / well-formed turns | rate | skipped |\n| --- | --- | --- | --- |")
    reports = {label: agreement(formats.get(name, **options), turns) for label, name, options in VARIANTS}
    for label, report in reports.items():
        print(f"| {label} | {report.agreed} / {report.total} | {report.rate:.2%} | {report.skipped} |")
    for label, report in reports.items():
        for item in report.disagreements[:args.show]:
            print(f"\n{label} — {item['label']}\n  text:     {item['text'][:300]!r}\n"
                  f"  parse:    {item['parse']}\n  template: {item['template']}")
        if len(report.disagreements) > args.show:
            print(f"\n{label}: {len(report.disagreements) - args.show} more disagreement(s)")
    failing = [label for label, report in reports.items() if report.rate < args.min_rate]
    if failing:
        print(f"\nbelow {args.min_rate:.0%}: {', '.join(failing)}", file=sys.stderr)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
