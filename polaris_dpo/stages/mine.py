"""stage mine (not built yet)."""

from polaris_dpo.stages import StageNotBuilt


def run(cfg) -> dict:
    raise StageNotBuilt("stage 'mine' is not built yet")
