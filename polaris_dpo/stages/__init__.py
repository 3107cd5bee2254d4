"""The jobs of `python -m polaris_dpo stage=...`: one module per stage, each with `run(cfg) -> dict`."""

from __future__ import annotations

import importlib

from polaris_dpo.config import STAGES, check_known_keys


class StageNotBuilt(RuntimeError):
    """Raised by a stage that is not implemented yet; the CLI prints one line and exits non-zero."""


def run_stage(name: str, cfg) -> dict:
    if name not in STAGES:
        raise ValueError(f"stage.name={name!r} is not a stage; expected one of: {', '.join(STAGES)}")
    check_known_keys(cfg)
    module = importlib.import_module(f"polaris_dpo.stages.{name}")
    return module.run(cfg)
