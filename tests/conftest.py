"""Shared fixtures: the tiny model cache (built once per session), composed configs, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One model cache for the whole test session (POLARIS_DPO_CACHE reaches subprocesses too)."""
    cache = Path(os.environ.get("POLARIS_DPO_TEST_CACHE") or tmp_path_factory.mktemp("model-cache"))
    os.environ["POLARIS_DPO_CACHE"] = str(cache)
    return cache


def tiny_unless_chosen(overrides) -> list[str]:
    """`model=tiny` (the tests' model) unless the overrides choose a model or an experiment themselves."""
    return [] if any(str(o).startswith(("model=", "experiment=")) for o in overrides) else ["model=tiny"]


@pytest.fixture
def make_cfg(tiny_cache, tmp_path):
    """compose(overrides) as the CLI would, with run_dir in tmp_path and the session's model cache."""
    from polaris_dpo.compose import compose

    def _make(*overrides: str, run_dir: Path | None = None):
        return compose([*tiny_unless_chosen(overrides), f"model.cache_dir={tiny_cache}", *overrides],
                       run_dir=str(run_dir or tmp_path / "run"))

    return _make


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` beside the repo (CI and developers have it; a user's clone does not: skip)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (only CI and developers have it)")
    return SHARED_DATA
