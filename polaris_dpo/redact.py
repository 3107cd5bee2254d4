"""Secrets out of what gets written: the run's config.yaml, pair set cards and model cards.

Tokens and keys come from the environment (HF_TOKEN, WANDB_API_KEY), never from the config; but a
user may still pass one through a pass-through section (`sft.trl.hub_token=...`), so every config
dump replaces the value of any key that names a credential.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

# credential names; a tokenizer's `pad_token` or a count like `max_new_tokens` is not one
SECRET_KEY = re.compile(r"secret|passw|credential|api_?key|(^|_)key$|^token$|(^|_)(hf|hub|auth|access|api|bearer|"
                        r"wandb|github|gh)_token$", re.IGNORECASE)
REDACTED = "<redacted>"


def scrub(node):
    """A copy of a plain config (dicts and lists) with the value of every credential-named key replaced."""
    if isinstance(node, dict):
        return {k: (REDACTED if SECRET_KEY.search(str(k)) and v not in (None, False) else scrub(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [scrub(v) for v in node]
    return node


def config_yaml(cfg: DictConfig) -> str:
    """The config as YAML with every interpolation resolved and credentials replaced."""
    return OmegaConf.to_yaml(scrub(OmegaConf.to_container(cfg, resolve=True)))
