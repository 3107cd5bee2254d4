"""`python -m polaris_dpo --help`: a short text with the stages, an example per stage and the config groups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("pipeline", "sft", "mine", "dpo", "eval", "merge")


def test_help_describes_the_stages_with_examples_and_stays_short():
    done = subprocess.run([sys.executable, "-m", "polaris_dpo", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    lines = text.splitlines()
    assert len(lines) < 80, text
    for stage in STAGES:
        assert any(line.split()[:1] == [stage] for line in lines), f"no line for stage {stage}:\n{text}"
        if stage != "pipeline":
            assert f"python -m polaris_dpo stage={stage} " in text
    assert "python -m polaris_dpo stage=dpo dpo.sft_model=<sft output> dpo.pairs=<pair set>" in text
    assert "--cfg job" in text
    assert "model: " in text and "smollm2-135m" in text and "tiny" in text  # the groups, from Hydra
    assert "$APP_CONFIG_GROUPS" not in text and "${" not in text
    assert "beta:" not in text and "== Config ==" not in text  # not the whole config
