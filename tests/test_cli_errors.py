"""The CLI reports a user error inside a stage in one line (exit 1), an internal error with its traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from polaris_dpo.gguf_models import GGUFError
from polaris_dpo.merging import MergeError
from polaris_dpo.messages import FieldError
from polaris_dpo.readers import DataFileError
from polaris_dpo.stages.pipeline import StepFailed


def run_cli(tmp_path, *args: str, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env.update(WANDB_MODE="disabled", **({"HYDRA_FULL_ERROR": "1"} if full_error else {}))
    command = [sys.executable, "-m", "polaris_dpo", "model=tiny", f"hydra.run.dir={tmp_path}", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "named"), [
    (["stage=eval", "data.path=/nope.jsonl"], "data.path: /nope.jsonl does not exist"),
    (["stage=mine", "mine.categories=[missed_cal]"], "mine.categories: unknown ['missed_cal']"),
    (["stage=mine", "mine.source=when2call", "data=when2call"], "data.path (or data.hub_id) must be set: a When2Call"),
])
def test_user_error_is_one_line_without_traceback(tmp_path, args, named):
    done = run_cli(tmp_path, *args)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "HYDRA_FULL_ERROR" not in done.stderr
    messages = [line for line in done.stderr.splitlines() if line.startswith("polaris-dpo: ")]
    assert len(messages) == 1 and named in messages[0], done.stderr


def test_hydra_full_error_keeps_the_traceback(tmp_path):
    done = run_cli(tmp_path, "stage=eval", "judge.strings=fuzzy", full_error=True)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "judge.strings='fuzzy'" in done.stderr


def test_which_errors_are_the_users():
    from polaris_dpo.__main__ import is_user_error

    for err in (ValueError("x"), DataFileError("x"), FieldError("data.path", "x"), GGUFError("x"),
                FileNotFoundError("x"), MergeError("x")):
        assert is_user_error(err), err
    for err in (AttributeError("x"), RuntimeError("x"), KeyError("x"), TypeError("x")):
        assert not is_user_error(err), err


def test_a_failed_pipeline_step_is_the_users_when_its_cause_is():
    from polaris_dpo.__main__ import is_user_error

    def step_failed(cause: Exception) -> StepFailed:
        try:
            raise StepFailed("pipeline step 'sft' (1/3) failed") from cause
        except StepFailed as err:
            return err

    assert is_user_error(step_failed(ValueError("sft.schedule='x'")))
    assert not is_user_error(step_failed(AttributeError("'NoneType' object has no attribute 'x'")))
