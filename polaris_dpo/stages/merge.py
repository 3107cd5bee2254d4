"""stage merge (not built yet)."""

from polaris_dpo.stages import StageNotBuilt


def run(cfg) -> dict:
    raise StageNotBuilt("stage 'merge' is not built yet")
