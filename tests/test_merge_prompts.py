"""Which held-out prompts verify a merge: as many as asked, a call among them when the data has one."""

from __future__ import annotations

import json

import pytest

from polaris_dpo.stages.merge import verification_examples


def _data(tmp_path, with_call: bool):
    rows = []
    for i in range(6):
        answer = {"role": "assistant", "content": f"answer {i}"}
        if with_call and i == 4:
            answer = {"role": "assistant", "content": None,
                      "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}]}
        rows.append({"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i}"}, answer],
                     "tools": [{"name": "f", "parameters": {"type": "object", "properties": {}}}]})
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["data.reader=openai", f"data.path={path}", "data.eval_fraction=1.0"]


@pytest.mark.parametrize("with_call", [True, False])
def test_verification_takes_as_many_prompts_as_asked(make_cfg, tmp_path, with_call):
    cfg = make_cfg("stage=merge", *_data(tmp_path, with_call))
    chosen = verification_examples(cfg, 3)
    assert len(chosen) == 3
    assert any(e["reference"].get("tool_calls") for e in chosen) is with_call


def test_zero_verification_prompts_is_a_config_error(make_cfg, tmp_path):
    cfg = make_cfg("stage=merge", *_data(tmp_path, True))
    with pytest.raises(ValueError, match=r"merge.verify_prompts=0"):
        verification_examples(cfg, 0)
