"""A default run warns nothing from the project's own calls: no deprecated library names, no bitsandbytes noise.

pyproject's `filterwarnings` turns a FutureWarning or DeprecationWarning attributed to a polaris_dpo module
into an error in every test; these tests record all warnings, whatever their filters, and look at them."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from test_sample import ChatML, examples, tiny  # noqa: F401 (tiny is a fixture)

from polaris_dpo import models, sample

PACKAGE = str(Path(models.__file__).resolve().parent)
DEPRECATIONS = (FutureWarning, DeprecationWarning)


def deprecations(caught, *names: str) -> list[str]:
    """The recorded deprecations warned at the project's lines or naming one of `names`, as readable lines."""
    return [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught
            if issubclass(w.category, DEPRECATIONS)
            and (str(Path(w.filename).resolve()).startswith(PACKAGE) or any(n in str(w.message) for n in names))]


@pytest.mark.slow
def test_generate_warns_no_deprecation(tiny):  # noqa: F811 (the fixture of test_sample)
    """`generate` hands its caches over as `cache=` (the prefill forward and generate): `past_key_values=`
    is deprecated in transformers 5.24 (FutureWarning at our generate call, and at torch's for the forward)."""
    model, tokenizer = tiny
    prompts = examples(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampled = list(sample.generate(model, tokenizer, ChatML(), prompts, n=2, temperature=1.0,
                                       max_new_tokens=6, batch_size=2, seed=1))
        greedy = list(sample.generate(model, tokenizer, ChatML(), prompts, temperature=0, max_new_tokens=6))
    assert [len(s) for s in sampled] == [2, 2, 2] and [len(s) for s in greedy] == [1, 1, 1]
    assert deprecations(caught, "past_key_values", "cache_params") == []


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_trainer_args_use_activation_checkpointing_and_trl_still_reads_it(make_cfg, stage, checkpointing):
    """`train.gradient_checkpointing` goes to TrainingArguments' `activation_checkpointing` (what the Trainer
    reads) without the deprecated alias's FutureWarning, and `gradient_checkpointing` (what TRL's trainers
    read; TRL's own default is True) follows it."""
    from trl import DPOConfig, SFTConfig

    from polaris_dpo.training import trainer_args

    cfg = make_cfg(f"train.gradient_checkpointing={checkpointing}")
    config_cls = SFTConfig if stage == "sft" else DPOConfig
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = trainer_args(config_cls, cfg, cfg[stage], Path(cfg.run_dir), stage)
    assert deprecations(caught, "checkpointing") == []
    assert args.activation_checkpointing is checkpointing and args.gradient_checkpointing is checkpointing


def test_trl_passthrough_may_not_set_activation_checkpointing(make_cfg):
    from trl import SFTConfig

    from polaris_dpo.training import trainer_args

    cfg = make_cfg("+sft.trl.activation_checkpointing=true")
    with pytest.raises(ValueError, match=r"set train.gradient_checkpointing instead"):
        trainer_args(SFTConfig, cfg, cfg.sft, Path(cfg.run_dir), "sft")


def test_bitsandbytes_missing_kernels_notice_is_not_logged():
    """bitsandbytes (imported by peft) logs on AVX512-BF16 CPUs that the optional `kernels` package is missing;
    models.py quiets that one logger. (Elsewhere bitsandbytes logs nothing, and this passes anyway.)"""
    code = "import polaris_dpo.models, peft, bitsandbytes"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "gemm_4bit_forward" not in done.stderr + done.stdout
