"""The bundled demo data (scripts/build_demo_data.py): rebuilt exactly from glaive templates, the failures real data has, unseen held-out prompts."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest
from conftest import REPO

from polaris_dpo import messages, paths, readers
from polaris_dpo.typography import find_issues


def _script():
    spec = importlib.util.spec_from_file_location("build_demo_data", REPO / "scripts" / "build_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


demo_data = _script()
DEMO = Path(paths.asset(demo_data.DEMO_DIR))


@pytest.fixture(scope="module")
def glaive():
    return demo_data.glaive_conversations()


@pytest.fixture(scope="module")
def demo(tiny_cache):
    from polaris_dpo.compose import compose

    cfg = compose(["model=tiny", f"model.cache_dir={tiny_cache}"], run_dir=None)
    conversations, counts = readers.read_all(cfg.data)
    train, held_out = readers.split(conversations, cfg.data.eval_fraction, cfg.data.split_seed)
    return conversations, counts, train, held_out


def test_bundled_file_is_what_the_builder_makes(tmp_path):
    info = demo_data.write_demo(tmp_path)
    assert (tmp_path / demo_data.DEMO_FILE).read_bytes() == (DEMO / demo_data.DEMO_FILE).read_bytes()
    assert json.loads((DEMO / demo_data.BUILD_FILE).read_text()) == json.loads(json.dumps(info))
    assert (DEMO / "LICENSE_Apache-2.0.txt").is_file()
    assert (DEMO / demo_data.DEMO_FILE).stat().st_size < 6_000_000
    templates = info["templates"]  # every glaive episode is kept or counted with the reason it was not
    assert templates["episodes"] == templates["kept"] + sum(v for k, v in templates.items() if k.startswith("skipped_"))
    assert templates["kept"] == sum(info["functions"].values()) and len(info["functions"]) >= 8


def test_demo_reader_reads_every_row(demo):
    conversations, counts, _, _ = demo
    assert counts["quarantined"] == 0 and counts["kept"] == counts["read"] > 2000
    assert all(c["source"] == "glaive" for c in conversations)


def test_templates_slot_every_argument_found_verbatim(glaive):
    templates, _ = demo_data.make_templates(glaive)
    pools = demo_data.make_pools(glaive, lambda cid: False)[False]
    rng = random.Random(0)
    changed = 0
    for template in templates:
        original = template.messages[-3]["tool_calls"][0]["function"]["arguments"]
        for _ in range(3):
            filled, tools = demo_data.fill(template, pools, rng)
            user, call = filled[-4]["content"], filled[-3]["tool_calls"][0]["function"]
            assert call["name"] == template.function in {t["function"]["name"] for t in tools}
            for slot in template.slots:
                if not slot.path:
                    continue
                value = call["arguments"][slot.path[0]]
                value = value[slot.path[1]] if len(slot.path) == 2 else value
                written = str(int(value)) if isinstance(value, float) and value.is_integer() and "." not in slot.text \
                    else str(value)
                assert written in user, (template.function, written, user)
            changed += call["arguments"] != original
    assert changed > len(templates)  # new values, not copies of glaive's


def test_held_out_prompts_are_unseen_and_clean(demo):
    _, _, train, held_out = demo
    seen = set().union(*(demo_data.request_texts(c) for c in train))
    assert held_out and not any(demo_data.request_texts(c) & seen for c in held_out)
    assert not any(c.get("noise") for c in held_out)
    for conv in held_out:
        for message in conv["messages"]:
            if message["role"] == "assistant" and message.get("content"):
                assert not find_issues(message["content"]), message["content"]
    kinds = {c["augmentation"] for c in held_out}
    assert kinds == {"call", "no_call"}


def test_training_side_has_the_failures(demo):
    _, _, train, _ = demo
    answers = [m for c in train for i, m in enumerate(c["messages"])
               if m["role"] == "assistant" and i and c["messages"][i - 1]["role"] == "tool"]
    spaced = [c for c in train if "bad_spacing" in c.get("noise", [])]
    assert 0.2 < len(spaced) / len(answers) < 0.45
    for conv in spaced:  # every injected error is one the judge's rules find
        assert any(find_issues(m["content"]) for m in conv["messages"] if m["role"] == "assistant" and m.get("content"))
    calls = [c for c in train if c["augmentation"] == "call"]
    missed = [c for c in train if "missed_call" in c.get("noise", [])]
    assert 0.08 < len(missed) / len(calls) < 0.25
    for conv in missed:  # prose where a call was due; the answer key keeps the call
        last = conv["messages"][-1]
        assert last["role"] == "assistant" and last["content"] and not last.get("tool_calls")
        (example,) = messages.examples(conv)
        assert example["acceptable"] and example["acceptable"][0]["name"] in {t["function"]["name"] for t in conv["tools"]}


def test_calls_come_first_and_later_in_conversations(demo):
    conversations = demo[0]
    call_examples = [e for c in conversations for e in messages.examples(c) if e["reference"].get("tool_calls")]
    after_talk = [e for e in call_examples if sum(m["role"] == "assistant" for m in e["prompt"]) >= 1]
    assert {e["position"] for e in call_examples} >= {"first", "middle"}
    assert 0.2 < len(after_talk) / len(call_examples) < 0.9  # calls mid-conversation, after small talk or a first call


def test_spacing_error_is_found_and_fixable():
    rng = random.Random(0)
    text = "The area of the rectangle is 15 square units, and the perimeter is 16 units."
    edited = demo_data.add_spacing_error(text, rng)
    assert edited != text and find_issues(edited)
    assert "is:15" in edited or "is:16" in edited  # the Polaris style comes first where it fits
    assert demo_data.add_spacing_error("OK", rng) is None


def test_every_call_fits_in_the_default_jobs_sample_length(demo, tiny_cache):
    """A call longer than the eval's `max_new_tokens` would be cut off and judged malformed whatever the model."""
    from polaris_dpo import formats, models
    from polaris_dpo.compose import compose

    cfg = compose(["model=tiny", f"model.cache_dir={tiny_cache}"], run_dir=None)
    limit = int(cfg.eval.max_new_tokens)
    fmt = formats.from_config(cfg.format)
    tokenizer = models.load_tokenizer(models.model_path_for(cfg, fmt), fmt)
    user = {"role": "user", "content": "x"}
    prefix = fmt.render([user], None, add_generation_prompt=True)
    lengths = []
    for conv in demo[0]:
        for m in conv["messages"]:
            if m.get("tool_calls"):
                text = fmt.render([user, m], None)
                assert text.startswith(prefix)
                lengths.append(len(tokenizer(text[len(prefix):], add_special_tokens=False).input_ids))
    assert len(lengths) > 1000 and max(lengths) <= limit, max(lengths)
