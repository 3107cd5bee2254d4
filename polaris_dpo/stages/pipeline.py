"""stage pipeline (not built yet)."""

from polaris_dpo.stages import StageNotBuilt


def run(cfg) -> dict:
    raise StageNotBuilt("stage 'pipeline' is not built yet")
