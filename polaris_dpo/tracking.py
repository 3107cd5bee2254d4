"""wandb through the trainers' `report_to`, decided once per job.

`wandb.mode=auto` logs online only when a key is configured (WANDB_API_KEY or a netrc login) and
is otherwise off with a one-line notice: never a 100-second hang on a closed network. Secrets stay
in the environment; nothing here writes them anywhere.
"""

from __future__ import annotations

import logging
import netrc
import os

log = logging.getLogger(__name__)

# what the user's environment said before any job of this process exported its own settings: a
# multirun point or pipeline step must not read the previous one's WANDB_* as the user's choice
_WANDB_VARIABLES = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR")
_USER_ENVIRONMENT = {name: os.environ.get(name) for name in _WANDB_VARIABLES}


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(cfg) -> str:
    """The effective mode: online | offline | disabled (WANDB_MODE in the environment wins over auto)."""
    mode = cfg.wandb.mode
    if mode == "auto":
        env_mode = _USER_ENVIRONMENT["WANDB_MODE"]
        if env_mode in ("online", "offline", "disabled"):
            return env_mode
        if _has_wandb_key():
            return "online"
        log.info("wandb: no API key configured, logging disabled (set WANDB_API_KEY or wandb.mode=offline)")
        return "disabled"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"wandb.mode={mode!r}: expected auto | online | offline | disabled")
    return mode


def report_to(cfg) -> list[str]:
    """The trainers' `report_to` for this job; also exports WANDB_* so the trainer's run is named and placed."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return []
    _export("WANDB_MODE", mode)
    _export("WANDB_PROJECT", cfg.wandb.project)
    _export("WANDB_ENTITY", cfg.wandb.entity or _USER_ENVIRONMENT["WANDB_ENTITY"])
    _export("WANDB_DIR", _USER_ENVIRONMENT["WANDB_DIR"] or str(cfg.run_dir))
    return ["wandb"]


def _export(name: str, value: str | None) -> None:
    if value:
        os.environ[name] = str(value)
    else:
        os.environ.pop(name, None)


def run_name(cfg, suffix: str = "") -> str:
    """A run name from the Hydra job: the run folder's name, and the stage."""
    base = f"{cfg.stage.name}-{os.path.basename(str(cfg.run_dir).rstrip('/'))}"
    return f"{base}-{suffix}" if suffix else base


def finish() -> None:
    """Close the current wandb run so that the next trainer in this process (a multirun) starts its own."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def log_metrics(cfg, metrics: dict, name: str) -> None:
    """Log a flat dict of metrics to a wandb run of its own (eval reports, pipeline summaries)."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return
    import wandb

    with wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, name=run_name(cfg, name),
                    mode=mode, dir=str(cfg.run_dir), tags=list(cfg.wandb.tags), reinit="finish_previous") as run:
        run.log(metrics)
