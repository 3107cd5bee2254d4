"""The config of one pipeline step: the pipeline's config with `pipeline.step_overrides.<stage>` applied
(checked against the schema, except inside the pass-through sections `sft.trl` / `dpo.trl`; a key set on the
command line wins over a step override) and the wiring from the steps before it."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from polaris_dpo.config import STAGES, command_line_keys

log = logging.getLogger(__name__)


def is_passthrough(cfg: DictConfig, key: str) -> bool:
    """A key inside a free-form dict of the schema (`sft.trl`, `dpo.trl`): new keys allowed, values unchecked."""
    parts = key.split(".")
    for depth in range(1, len(parts)):
        node = OmegaConf.select(cfg, ".".join(parts[:depth]), default=None)
        if not isinstance(node, DictConfig):
            return False
        if OmegaConf.get_type(node) is dict:
            return True
    return False


def parse_override(stage: str, override: str) -> tuple[str, str, bool]:
    """(key, value, adds) of one `pipeline.step_overrides.<stage>` entry; `+key=value` adds a key."""
    where = f"pipeline.step_overrides.{stage}: {override!r}"
    key, equals, value = str(override).partition("=")
    if key.startswith("~"):
        raise ValueError(f"{where}: deleting a key (~) is not supported in a step override; set it to null instead")
    if not equals or not key.lstrip("+"):
        raise ValueError(f"{where}: expected key=value")
    return key.lstrip("+"), value, key.startswith("+")


def apply_override(sub: DictConfig, stage: str, override: str) -> DictConfig:
    """One step override, checked against the schema (key and type) unless it is in a pass-through section."""
    where = f"pipeline.step_overrides.{stage}: {override!r}"
    key, value, adds = parse_override(stage, override)
    if is_passthrough(sub, key):
        with open_dict(sub):
            OmegaConf.update(sub, key, OmegaConf.from_dotlist([f"v={value}"]).v, merge=True)
        return sub
    if adds:
        raise ValueError(f"{where}: '+' adds a key, which only a pass-through section (sft.trl, dpo.trl) accepts; "
                         f"drop the '+' to set a key of the config")
    try:
        return OmegaConf.merge(sub, OmegaConf.from_dotlist([f"{key}={value}"]))
    except OmegaConfBaseException as err:
        raise ValueError(f"{where}: {str(err).splitlines()[0]}") from err


def set_on_command_line(key: str, keys: set[str]) -> bool:
    """`key` or a section holding it (`dpo.trl` for `dpo.trl.beta`) was set on the command line."""
    parts = key.split(".")
    return any(".".join(parts[:depth]) in keys for depth in range(1, len(parts) + 1))


def build_step_cfg(cfg: DictConfig, run_dir: Path, step: str, stage: str, cli_keys: set[str] | None = None,
                   **wiring) -> DictConfig:
    """The config of one step (schema kept): the pipeline's own with the stage's overrides and the wiring.

    A step override never replaces a key the user set on the command line: the command line wins."""
    sub = copy.deepcopy(cfg)
    OmegaConf.set_readonly(sub, False)
    OmegaConf.set_struct(sub, True)
    sub.run_dir = str(run_dir / step)
    sub.stage.name = stage
    cli_keys = command_line_keys() if cli_keys is None else cli_keys
    for override in cfg.pipeline.step_overrides.get(stage) or []:
        key = parse_override(stage, override)[0]
        if set_on_command_line(key, cli_keys):
            log.info("pipeline.step_overrides.%s: %r not applied, %s is set on the command line", stage, override, key)
            continue
        sub = apply_override(sub, stage, override)
    for key, value in wiring.items():
        OmegaConf.update(sub, key, value, merge=False)
    return sub


def step_cfg(cfg: DictConfig, run_dir: Path, step: str, stage: str, **wiring) -> DictConfig:
    """build_step_cfg, run in `<run_dir>/<step>/` (created)."""
    sub = build_step_cfg(cfg, run_dir, step, stage, **wiring)
    Path(sub.run_dir).mkdir(parents=True, exist_ok=True)
    return sub


def check_step_overrides(cfg: DictConfig, run_dir: Path) -> None:
    """Every step's config built before the first step runs: an unknown stage, key or a wrong type fails now."""
    from polaris_dpo.stages import eval, mine

    stages = STAGES[1:]
    unknown = [name for name in cfg.pipeline.step_overrides if name not in stages]
    if unknown:
        raise ValueError(f"pipeline.step_overrides.{unknown[0]}: not a pipeline stage; "
                         f"expected one of: {', '.join(stages)}")
    for stage in stages:
        sub = build_step_cfg(cfg, run_dir, stage, stage)
        if stage == "mine":
            mine.check_config(sub.mine)
        if stage == "eval":
            eval.check_config(sub.eval)
        if stage in ("sft", "dpo"):
            from trl import DPOConfig, SFTConfig

            from polaris_dpo import training

            training.check_passthrough(SFTConfig if stage == "sft" else DPOConfig, sub[stage], stage)
