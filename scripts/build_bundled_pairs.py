"""Build the bundled pair set `pairs/demo/` (the demo's and the tests' default `dpo.pairs`).

    .venv/bin/python scripts/build_bundled_pairs.py [--prompts 150]

Synthetic mining (no model) over the glaive-function-calling-v2 sample bundled in the package
(`polaris_dpo/assets/glaive`, Apache-2.0): every reference is perturbed into each failure category
and kept when the judge files it there. The set's licence and source note are copied beside it, and
the finished folder replaces `pairs/demo` in one rename.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from polaris_dpo import paths  # noqa: E402
from polaris_dpo.compose import compose  # noqa: E402
from polaris_dpo.stages import mine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--prompts", type=int, default=150, help="prompts mined (glaive train side)")
    parser.add_argument("--target", default=str(REPO / "pairs" / "demo"))
    args = parser.parse_args()
    target = Path(args.target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        cfg = compose(["stage=mine", "mine.source=synthetic", "data=glaive", f"mine.pairs_dir={tmp}",
                       "mine.name=demo", f"mine.max_prompts={args.prompts}", "mine.max_pairs_per_prompt=2",
                       "mine.test_fraction=0.1"], run_dir=f"{tmp}/run")
        built = Path(mine.run(cfg)["pairs"])
        glaive = Path(paths.asset("glaive"))
        shutil.copyfile(glaive / "LICENSE_Apache-2.0.txt", built / "LICENSE_Apache-2.0.txt")
        (built / "SOURCE.txt").write_text(
            "Prompts and references: glaive-function-calling-v2 sample bundled in polaris_dpo/assets/glaive\n"
            f"({(glaive / 'SOURCE.txt').read_text().strip()}), Apache-2.0.\n"
            "Rejected answers: synthetic perturbations made by polaris_dpo.pairs (scripts/build_bundled_pairs.py).\n")
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            target.rename(old)
        built.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
