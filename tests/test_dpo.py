"""stage dpo on the tiny model: margins rise per loss type, and the reference is exactly the SFT model."""

from __future__ import annotations

import json

import pytest
import torch
from test_sft import QUICK, TINY, conversations, use_test_format, write_pairs

from polaris_dpo import models


@pytest.fixture
def sft_adapter(make_cfg, monkeypatch, tmp_path):
    """A short SFT run: the adapter DPO starts from and must use as its reference."""
    from polaris_dpo.stages import sft

    use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TINY, *QUICK, "sft.max_steps=3", "sft.learning_rate=1e-2",
                   "sft.per_device_train_batch_size=4", run_dir=tmp_path / "sft_run")
    return sft.run(cfg, conversations=conversations(8))["output_dir"]


def margins(log_history) -> list[float]:
    return [entry["rewards/margins"] for entry in log_history if "rewards/margins" in entry]


@pytest.mark.parametrize("loss", [
    ("dpo.loss_type=[sigmoid]",),
    ("dpo.loss_type=[ipo]",),
    ("dpo.loss_type=[sigmoid,sft]", "dpo.loss_weights=[1.0,0.5]"),
])
def test_dpo_margins_rise(make_cfg, tmp_path, sft_adapter, loss):
    from polaris_dpo.stages import dpo

    pairs = write_pairs(tmp_path / "pairs")
    cfg = make_cfg("stage=dpo", *TINY, *QUICK, *loss, "dpo.max_steps=6", "dpo.learning_rate=5e-3", "dpo.beta=0.5",
                   "dpo.per_device_train_batch_size=4", f"dpo.pairs={pairs}", f"dpo.sft_model={sft_adapter}")
    result = dpo.run(cfg)
    out = tmp_path / "run" / "dpo"
    record = json.loads((out / "training.json").read_text())
    assert record["adapter_chain"] == [str(out)] and record["reference_mode"] == "continue_adapter"
    assert "SFT adapter" in result["reference"]
    assert not (out / "ref").exists()
    history = [e for e in json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())[
        "log_history"]]
    steps = margins(history)
    assert len(steps) == 6
    assert steps[-1] > steps[0] and steps[-1] > 0, steps
    # the DPO adapter moved away from the SFT adapter it started from
    from safetensors.torch import load_file
    sft_w = load_file(f"{sft_adapter}/adapter_model.safetensors")
    dpo_w = load_file(str(out / "adapter_model.safetensors"))
    assert sft_w.keys() == dpo_w.keys()
    assert any(not torch.equal(sft_w[k], dpo_w[k]) for k in sft_w if "lora_B" in k)


def sequence_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of each (chosen, rejected) row, computed here independently of TRL."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logps * batch["completion_mask"][:, 1:]).sum(1).chunk(2)


@pytest.mark.parametrize("reference", ["continue_adapter", "merge_sft"])
def test_reference_log_probs_are_the_sft_models(make_cfg, tmp_path, sft_adapter, reference):
    from polaris_dpo.stages import dpo

    pairs = write_pairs(tmp_path / "pairs", n=4)
    cfg = make_cfg("stage=dpo", *TINY, *QUICK, f"dpo.reference={reference}", "dpo.per_device_train_batch_size=4",
                   f"dpo.pairs={pairs}", f"dpo.sft_model={sft_adapter}")
    setup = dpo.build(cfg)
    trainer = setup["trainer"]
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)

    sft_model, _ = models.load_trained(sft_adapter, cfg)
    sft_model.eval()
    sft_chosen, sft_rejected = sequence_logps(sft_model, batch)
    torch.testing.assert_close(ref_chosen, sft_chosen, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ref_rejected, sft_rejected, atol=1e-4, rtol=1e-5)

    base, _ = models.load_trained(setup["record"]["base_model"], cfg)
    base_chosen, _ = sequence_logps(base.eval(), batch)
    assert (base_chosen - sft_chosen).abs().max() > 1e-2  # the raw base would have been told apart
    assert setup["record"]["adapter_chain"][-1] == str(tmp_path / "run" / "dpo")
    if reference == "merge_sft":
        assert setup["record"]["adapter_chain"] == [sft_adapter, str(tmp_path / "run" / "dpo")]
        assert "ref" not in trainer.model.peft_config  # a fresh adapter's reference is it switched off: no copy runs
