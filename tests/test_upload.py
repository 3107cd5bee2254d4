"""scripts/merge_and_upload.py: dry run, the commit it would send (huggingface_hub's own objects), no token leaks."""

from __future__ import annotations

import hashlib
import importlib.util
import logging

import pytest
from conftest import REPO
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from test_merge_helpers import build_chain

from polaris_dpo import merging

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefXYZ"


def _script():
    spec = importlib.util.spec_from_file_location("merge_and_upload", REPO / "scripts" / "merge_and_upload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hub_calls(monkeypatch):
    """Only the network calls of HfApi are replaced; everything they receive is recorded."""
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs, self.token)

    def create_branch(self, repo_id, **kwargs):
        calls["create_branch"] = (repo_id, kwargs)

    def create_commit(self, repo_id, operations, **kwargs):
        calls.setdefault("create_commit", []).append((repo_id, list(operations), kwargs))
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc", commit_message="m",
                          commit_description="", oid="abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def test_dry_run_then_upload_then_retry_without_merging(make_cfg, tmp_path, monkeypatch, capsys, caplog, hub_calls):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    caplog.set_level(logging.DEBUG)
    script = _script()
    run_dir = tmp_path / "run"
    build_chain(make_cfg(), run_dir)
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "stats.json").write_text('{"pairs": 40, "categories": {"missed_call": 25, "bad_spacing": 15}}')
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text('{"rates": {"ok": 0.5, "missed_call": 0.3}}')
    after.write_text('{"rates": {"ok": 0.7, "missed_call": 0.1}}')
    common = ["--repo-id", "me/polaris-tiny", "--revision", "dpo-v1", "--private", "--pairs", str(tmp_path / "pairs"),
              "--eval-before", str(before), "--eval-after", str(after), "--license", "apache-2.0",
              f"model.cache_dir={make_cfg().model.cache_dir}", "merge.verify_prompts=2", "merge.verify_max_new_tokens=4"]

    assert script.main(["--run-dir", str(run_dir), "--dry-run", *common]) == 0
    out = capsys.readouterr().out
    merged = run_dir / "merged"
    files = sorted(p.name for p in merged.iterdir() if not p.name.startswith("."))
    assert {"README.md", "verification.json", "config.json", "model.safetensors", "tokenizer.json",
            "chat_template.jinja"} <= set(files)
    assert "destination: https://huggingface.co/me/polaris-tiny (revision dpo-v1, private), token from HF_TOKEN" in out
    for name in files:
        assert f"  {name}  (" in out
    assert "nothing uploaded" in out and "create_commit" not in hub_calls

    card = (merged / "README.md").read_text()
    assert "license: apache-2.0" in card and "base_model:" in card
    assert "| rates.missed_call | 0.3 | 0.1 |" in card and "| categories.missed_call | 25 |" in card
    assert "<|fn_start|>" in card and "apply_chat_template" in card

    # the real upload reuses the verified merge, and sends one commit of huggingface_hub operations
    monkeypatch.setattr(merging, "merge_and_verify", lambda *a, **k: pytest.fail("merged again"))
    assert script.main(["--run-dir", str(run_dir), *common]) == 0
    repo_id, operations, kwargs = hub_calls["create_commit"][0]
    assert repo_id == "me/polaris-tiny" and kwargs["revision"] == "dpo-v1"
    assert hub_calls["create_repo"][1]["private"] is True and hub_calls["create_branch"][1]["branch"] == "dpo-v1"
    assert all(isinstance(op, CommitOperationAdd) for op in operations)
    assert sorted(op.path_in_repo for op in operations) == files
    weights = next(op for op in operations if op.path_in_repo == "model.safetensors")
    assert weights.upload_info.sha256.hex() == hashlib.sha256((merged / "model.safetensors").read_bytes()).hexdigest()

    # a failed upload is retried from the merged folder alone
    assert script.main(["--merged-dir", str(merged), *common]) == 0
    assert len(hub_calls["create_commit"]) == 2
    assert sorted(op.path_in_repo for op in hub_calls["create_commit"][1][1]) == files

    # the token reached HfApi and nothing else: not the card, not any file, not the output, not the logs
    assert hub_calls["create_repo"][2] == FAKE_TOKEN
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err + caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_upload_without_a_token_stops_before_any_call(make_cfg, tmp_path, monkeypatch, hub_calls):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    script = _script()
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "verification.json").write_text('{"passed": true, "source": {"base_model": "b", "adapters": []}}')
    args = script.parse_args(["--merged-dir", str(merged), "--repo-id", "me/x"])
    with pytest.raises(SystemExit, match="no Hugging Face token"):
        script.upload(args, script.upload_operations(merged))
    assert hub_calls == {}


def test_retry_refuses_a_folder_that_did_not_verify(tmp_path, make_cfg):
    script = _script()
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "verification.json").write_text('{"passed": false}')
    args = script.parse_args(["--merged-dir", str(merged), "--dry-run", f"model.cache_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="no passed verification.json"):
        script.merged_folder(args, script.job_config(args))


def test_card_shows_eval_categories_before_and_after():
    from polaris_dpo import model_card
    from polaris_dpo.stages.eval import compute_metrics

    def rows(missed: int, ok: int) -> list[dict]:
        row = {"expects_call": True, "source": "demo", "position": "first"}
        return [{**row, "category": "missed_call"}] * missed + [{**row, "category": "ok"}] * ok

    before, after = compute_metrics(rows(30, 70)), compute_metrics(rows(5, 95))
    lines = model_card._eval_section(before, after)
    text = "\n".join(lines)
    assert "n = 100 before, 100 after" in text
    missed = next(line for line in lines if line.startswith("| missed_call |"))
    assert "30.0%" in missed and "5.0%" in missed
    assert any(line.startswith("| call accuracy | 70.0%") for line in lines)


def test_card_shows_an_undefined_call_accuracy_as_a_dash():
    from polaris_dpo import model_card
    from polaris_dpo.stages.eval import compute_metrics

    texts = [{"expects_call": False, "source": "bfcl", "position": "first", "category": "ok"}] * 10
    lines = model_card._eval_section(compute_metrics(texts), compute_metrics(texts))
    assert any(line.startswith("| call accuracy | – | – |") for line in lines)
