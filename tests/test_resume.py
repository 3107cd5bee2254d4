"""train.resume: a run cut after its middle checkpoint, resumed, ends with the uninterrupted run's loss."""

from __future__ import annotations

import logging
import shutil

from test_sft import QUICK, TINY, conversations, use_test_format


def test_resumed_sft_matches_uninterrupted(make_cfg, monkeypatch, tmp_path, caplog):
    from polaris_dpo.stages import sft

    use_test_format(monkeypatch)
    settings = ("stage=sft", *TINY, *QUICK, "sft.max_steps=6", "sft.save_steps=3", "sft.learning_rate=5e-3",
                "sft.per_device_train_batch_size=4")
    full = sft.run(make_cfg(*settings, run_dir=tmp_path / "full"), conversations=conversations(8))

    cut_dir = tmp_path / "cut"
    sft.run(make_cfg(*settings, run_dir=cut_dir), conversations=conversations(8))
    checkpoints = cut_dir / "sft" / "checkpoints"
    shutil.rmtree(checkpoints / "checkpoint-6")  # as if killed between step 3 and step 6
    (cut_dir / "sft" / "training.json").unlink()

    caplog.set_level(logging.INFO, logger="polaris_dpo")
    resumed = sft.run(make_cfg(*settings, "train.resume=true", run_dir=cut_dir), conversations=conversations(8))
    assert "continuing from" in caplog.text and "checkpoint-3" in caplog.text
    assert resumed["metrics"]["global_step"] == 6
    assert abs(resumed["metrics"]["final_loss"] - full["metrics"]["final_loss"]) < 1e-3 * full["metrics"]["final_loss"]
    assert (cut_dir / "sft" / "training.json").is_file()
