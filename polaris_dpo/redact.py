"""Secrets out of what gets written: the run's config.yaml, Hydra's record, sweep summaries, cards.

Tokens and keys come from the environment (HF_TOKEN, WANDB_API_KEY), never from the config; but a
user may still pass one through a pass-through section (`+sft.trl.hub_token=...`), so every config
dump replaces the value of any key that names a credential, and the files Hydra writes itself
(`.hydra/`, `multirun.yaml`) are rewritten without the values such overrides carry.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from polaris_dpo.atomic import atomic_write_text

# credential names; a tokenizer's `pad_token` or a count like `max_new_tokens` is not one
SECRET_KEY = re.compile(r"secret|passw|credential|api_?key|(^|_)key$|^token$|(^|_)(hf|hub|auth|access|api|bearer|"
                        r"wandb|github|gh)_token$", re.IGNORECASE)
REDACTED = "<redacted>"


# `key=value` inside a string: an override, or one of `pipeline.step_overrides`' entries
_ASSIGNMENT = re.compile(r"""(?P<key>[+~]?[\w.-]+)=(?P<value>'[^']*'|"[^"]*"|[^,'"\]\s]+)""")


def _is_secret_assignment(match: re.Match) -> bool:
    return bool(SECRET_KEY.search(match["key"].lstrip("+~").rsplit(".", 1)[-1]))


def _scrub_text(text: str) -> str:
    return _ASSIGNMENT.sub(lambda m: f"{m['key']}={REDACTED}" if _is_secret_assignment(m) else m[0], text)


def scrub(node):
    """A copy of a plain config (dicts and lists) with the value of every credential-named key replaced,
    also where a string assigns one (`pipeline.step_overrides.sft: ['sft.trl.hub_token=...']`)."""
    if isinstance(node, dict):
        return {k: (REDACTED if SECRET_KEY.search(str(k)) and v not in (None, False) else scrub(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [scrub(v) for v in node]
    if isinstance(node, str) and "=" in node:
        return _scrub_text(node)
    return node


def config_yaml(cfg: DictConfig) -> str:
    """The config as YAML with every interpolation resolved and credentials replaced."""
    return OmegaConf.to_yaml(scrub(OmegaConf.to_container(cfg, resolve=True)))


def override_secrets(overrides: list[str]) -> set[str]:
    """The values of command-line overrides (`[+~]a.b.key=value`) whose key names a credential, also inside
    a list value (`pipeline.step_overrides.sft=['sft.trl.hub_token=...']`)."""
    found = set()
    for override in overrides:
        for match in _ASSIGNMENT.finditer(override):
            value = match["value"].strip("'\"")
            if value and _is_secret_assignment(match):
                found.add(value)
    return found


def redact_overrides(overrides: list[str]) -> list[str]:
    """The overrides with every credential value replaced (for sweep summaries)."""
    secrets = override_secrets(overrides)
    return [redact_text(o, secrets) for o in overrides]


def redact_text(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_files(paths, secrets: set[str]) -> None:
    """Rewrite each existing file among `paths` with every secret value replaced."""
    for path in map(Path, paths) if secrets else ():
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if any(secret in text for secret in secrets):
                atomic_write_text(path, redact_text(text, secrets))


_LOGGED_SECRETS: set[str] = set()


def redact_logs(secrets: set[str]) -> None:
    """From now on every log record of this process carries these values as <redacted>, whichever logger
    or handler it goes through (Hydra reconfigures its handlers as it launches jobs)."""
    if not secrets or secrets <= _LOGGED_SECRETS:
        return
    if not _LOGGED_SECRETS:
        make_record = logging.getLogRecordFactory()

        def redacted_record(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a broken format string: logging reports it when the record is written
                return record
            if any(secret in message for secret in _LOGGED_SECRETS):
                record.msg, record.args = redact_text(message, _LOGGED_SECRETS), ()
            return record

        logging.setLogRecordFactory(redacted_record)
    _LOGGED_SECRETS.update(secrets)


class RedactHydraRecord(Callback):
    """Hydra callback: credentials passed as overrides leave what Hydra writes itself: the files of
    `.hydra/` and `multirun.yaml` (written before a job starts) and the log lines listing a sweep's jobs."""

    def on_run_start(self, config, **kwargs: Any) -> None:
        redact_logs(override_secrets(list(config.hydra.overrides.task)))

    on_multirun_start = on_run_start

    def on_job_start(self, config, **kwargs: Any) -> None:
        secrets = override_secrets(list(config.hydra.overrides.task))
        redact_logs(secrets)
        files = [Path(config.hydra.sweep.dir) / "multirun.yaml"] if is_multirun(config) else []
        if config.hydra.output_subdir is not None:
            files += sorted((Path(config.hydra.runtime.output_dir) / config.hydra.output_subdir).glob("*.yaml"))
        redact_files(files, secrets)


def is_multirun(config) -> bool:
    from hydra.types import RunMode

    return str(config.hydra.get("mode")) in (str(RunMode.MULTIRUN), "MULTIRUN")
