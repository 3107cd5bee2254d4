"""`python -m polaris_dpo stage=... key=value`: the Hydra entry point of every job."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from polaris_dpo import paths
from polaris_dpo.atomic import atomic_write_text
from polaris_dpo.compose import setup_resolvers
from polaris_dpo.merging import MergeError
from polaris_dpo.redact import config_yaml
from polaris_dpo.stages import StageNotBuilt, run_stage
from polaris_dpo.stages.pipeline import StepFailed

log = logging.getLogger("polaris_dpo")

setup_resolvers()

# Errors whose message tells the user what to fix (a key, a value, a file): the project's own DataFileError,
# FieldError and GGUFError are ValueErrors, MergeError names the folder or figure.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, MergeError)


def write_resolved_config(cfg: DictConfig) -> Path:
    """The run's config with every interpolation resolved and credentials redacted, next to Hydra's `.hydra/`."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(run_dir / "config.yaml", config_yaml(cfg))


def is_user_error(err: BaseException) -> bool:
    """Whether `err` is the user's to fix (see USER_ERRORS); a failed pipeline step is when its cause is."""
    if isinstance(err, StepFailed):
        return err.__cause__ is not None and is_user_error(err.__cause__)
    return isinstance(err, USER_ERRORS)


def traceback_wanted() -> bool:
    """Whether a user error goes on to Hydra's report: HYDRA_FULL_ERROR=1 asks for the traceback, and a
    multirun point fails in Hydra's hands, so that the other points still run and the sweep summary has it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or multirun


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
    except Exception as err:
        if not is_user_error(err) or traceback_wanted():
            raise
        print(f"polaris-dpo: {err}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
