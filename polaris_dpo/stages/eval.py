"""stage eval (not built yet)."""

from polaris_dpo.stages import StageNotBuilt


def run(cfg) -> dict:
    raise StageNotBuilt("stage 'eval' is not built yet")
