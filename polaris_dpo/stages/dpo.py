"""stage dpo (not built yet)."""

from polaris_dpo.stages import StageNotBuilt


def run(cfg) -> dict:
    raise StageNotBuilt("stage 'dpo' is not built yet")
