"""`python -m polaris_dpo stage=... key=value`: the Hydra entry point of every job."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from polaris_dpo import paths
from polaris_dpo.atomic import atomic_write_text
from polaris_dpo.compose import setup_resolvers
from polaris_dpo.redact import config_yaml
from polaris_dpo.stages import StageNotBuilt, run_stage

log = logging.getLogger("polaris_dpo")

setup_resolvers()


def write_resolved_config(cfg: DictConfig) -> Path:
    """The run's config with every interpolation resolved and credentials redacted, next to Hydra's `.hydra/`."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(run_dir / "config.yaml", config_yaml(cfg))


@hydra.main(version_base="1.3", config_path=str(paths.CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> dict | None:
    write_resolved_config(cfg)
    if cfg.hardware.torch_threads:
        import torch

        torch.set_num_threads(cfg.hardware.torch_threads)
    try:
        return run_stage(cfg.stage.name, cfg)
    except StageNotBuilt as err:
        print(f"polaris-dpo: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
