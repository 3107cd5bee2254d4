"""The bundled demo data: rebuilt exactly from glaive, the failures real data shows, no held-out leakage."""

from __future__ import annotations

import json
import random
from pathlib import Path

from polaris_dpo import demo_data, messages, paths, readers
from polaris_dpo.typography import find_issues

DEMO = Path(paths.asset(demo_data.DEMO_DIR))


def test_bundled_file_is_what_the_builder_makes(tmp_path):
    info = demo_data.write_demo(tmp_path)
    assert (tmp_path / demo_data.DEMO_FILE).read_bytes() == (DEMO / demo_data.DEMO_FILE).read_bytes()
    assert json.loads((DEMO / demo_data.BUILD_FILE).read_text()) == json.loads(json.dumps(info))
    assert (DEMO / "LICENSE_Apache-2.0.txt").is_file()


def test_demo_reader_reads_every_row(make_cfg, tmp_path):
    cfg = make_cfg()
    conversations, counts = readers.read_all(cfg.data, tmp_path)
    assert counts["quarantined"] == 0 and counts["kept"] == counts["read"] > 1000
    assert all(c["source"] == "glaive" for c in conversations)


def test_variants_stay_on_their_source_side(make_cfg, tmp_path):
    cfg = make_cfg()
    conversations, _ = readers.read_all(cfg.data, tmp_path)
    side = {}
    for conv in conversations:
        held_out = readers.is_held_out(conv["id"], cfg.data.eval_fraction, cfg.data.split_seed)
        base = conv["id"].split("/")[0]
        assert side.setdefault(base, held_out) == held_out, conv["id"]
    assert any(side.values()) and not all(side.values())


def test_training_side_has_the_failures_and_eval_side_is_clean(make_cfg, tmp_path):
    cfg = make_cfg()
    conversations, _ = readers.read_all(cfg.data, tmp_path)
    train, held_out = readers.split(conversations, cfg.data.eval_fraction, cfg.data.split_seed)
    assert not any(c.get("noise") for c in held_out)
    for conv in held_out:
        for message in conv["messages"]:
            if message["role"] == "assistant" and message.get("content"):
                assert not find_issues(message["content"]), message["content"]
    spaced = [c for c in train if "bad_spacing" in c.get("noise", [])]
    assert len(spaced) > 50
    for conv in spaced:  # every injected error is one the judge's rules find
        assert any(find_issues(m["content"]) for m in conv["messages"] if m["role"] == "assistant" and m.get("content"))
    missed = [c for c in train if "missed_call" in c.get("noise", [])]
    assert len(missed) > 50
    for conv in missed:  # prose where a call was due; the answer key keeps the call
        last = conv["messages"][-1]
        assert last["role"] == "assistant" and last["content"] and not last.get("tool_calls")
        (example,) = messages.examples(conv)
        assert example["acceptable"] and example["acceptable"][0]["name"] in {t["function"]["name"] for t in conv["tools"]}


def test_calls_come_at_every_position(make_cfg, tmp_path):
    cfg = make_cfg()
    conversations, _ = readers.read_all(cfg.data, tmp_path)
    positions = {e["position"] for c in conversations for e in messages.examples(c) if e["reference"].get("tool_calls")}
    assert positions == {"first", "middle", "last"}


def test_spacing_error_is_found_and_fixable():
    rng = random.Random(0)
    text = "The area of the rectangle is 15 square units, and the perimeter is 16 units."
    edited = demo_data.add_spacing_error(text, rng)
    assert edited != text and find_issues(edited)
    assert demo_data.add_spacing_error("OK", rng) is None
