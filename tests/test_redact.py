"""Credentials passed through a config never reach the run's config.yaml, the pipeline state or a pair set card."""

from __future__ import annotations

from pathlib import Path

import yaml

from polaris_dpo.__main__ import write_resolved_config
from polaris_dpo.redact import REDACTED, scrub
from polaris_dpo.stages import mine
from polaris_dpo.stages.pipeline import config_fingerprint

SECRET = "hf_NotARealToken0123456789"


def test_scrub_redacts_credentials_and_keeps_token_settings():
    config = {"trl": {"hub_token": SECRET, "push_to_hub": True},
              "wandb": {"api_key": SECRET, "key": SECRET, "project": "p"},
              "HF_TOKEN": SECRET, "token": SECRET, "db_password": SECRET, "client_secret": SECRET,
              "callbacks": [{"auth_token": SECRET}],
              "eval": {"max_new_tokens": 64, "verify_max_new_tokens": 32, "pad_token": "<pad>",
                       "special_tokens": ["<|fn_start|>"], "token_ids": [1, 2], "use_auth_token": False},
              "model": {"vocab_size": 2048, "hub_token": None}}
    scrubbed = scrub(config)
    assert SECRET not in repr(scrubbed)
    assert scrubbed["trl"] == {"hub_token": REDACTED, "push_to_hub": True}
    assert scrubbed["wandb"] == {"api_key": REDACTED, "key": REDACTED, "project": "p"}
    assert scrubbed["callbacks"] == [{"auth_token": REDACTED}]
    assert scrubbed["eval"] == config["eval"]  # counts, tokenizer tokens and a false flag are not secrets
    assert scrubbed["model"] == config["model"]  # nothing to hide in an unset token
    assert config["trl"]["hub_token"] == SECRET  # a copy: the config itself is unchanged


def test_run_config_and_pipeline_state_hide_a_passed_token(make_cfg):
    cfg = make_cfg(f"+sft.trl.hub_token={SECRET}", f"+dpo.trl.hub_token={SECRET}")
    assert cfg.sft.trl.hub_token == SECRET  # the trainer still gets it
    written = write_resolved_config(cfg).read_text(encoding="utf-8")
    assert SECRET not in written
    dumped = yaml.safe_load(written)
    assert dumped["sft"]["trl"]["hub_token"] == REDACTED and dumped["eval"]["max_new_tokens"] == cfg.eval.max_new_tokens
    assert SECRET not in repr(config_fingerprint(cfg))


def test_pair_set_card_hides_a_passed_token(make_cfg, tmp_path):
    cfg = make_cfg("stage=mine", "mine.source=synthetic", "data=glaive", f"mine.pairs_dir={tmp_path}/pairs",
                   "mine.name=secret", "data.limit=20", f"+sft.trl.hub_token={SECRET}")
    pairs_dir = Path(mine.run(cfg)["pairs"])
    card = (pairs_dir / "README.md").read_text(encoding="utf-8")
    assert "hub_token: <redacted>" in card
    assert not [p for p in pairs_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
