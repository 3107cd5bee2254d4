"""Compose the job config outside the CLI (tests, notebooks, benchmarks), exactly as the CLI would."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from polaris_dpo import paths
from polaris_dpo.config import register


def setup_resolvers() -> None:
    register()
    if not OmegaConf.has_resolver("assets"):
        OmegaConf.register_new_resolver("assets", paths.asset)


def compose(overrides: list[str] | tuple[str, ...] = (), run_dir: str | None = None) -> DictConfig:
    """The config `python -m polaris_dpo <overrides>` would run with; `run_dir` stands in for Hydra's output dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    setup_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(paths.CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
    return cfg
