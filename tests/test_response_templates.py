"""Response templates: they read what each format's parse reads, and every tokenizer the project writes carries one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_formats import call, names
from transformers import AutoTokenizer
from transformers.utils.chat_parsing import parse_response

from polaris_dpo import formats, models
from polaris_dpo.response_agreement import VARIANTS, agreement, bundled_turns, client_view, shared_turns

IDS = [label.replace(" ", "-") for label, _, _ in VARIANTS]
MIN_RATE = 0.99
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    return bundled_turns(tmp_path_factory.mktemp("bundled"), demo_limit=300)


@pytest.mark.parametrize(("label", "name", "options"), VARIANTS, ids=IDS)
def test_template_agrees_with_parse_on_the_bundled_data(label, name, options, bundled):
    report = agreement(formats.get(name, **options), bundled)
    assert report.total > 2000 and report.rate >= MIN_RATE, (label, report.rate, report.disagreements[:3])


@pytest.mark.parametrize(("label", "name", "options"), VARIANTS, ids=IDS)
def test_template_agrees_with_parse_on_the_shared_data(label, name, options, shared_data, tmp_path):
    report = agreement(formats.get(name, **options), shared_turns(shared_data, tmp_path))
    assert report.total > 500 and report.rate >= MIN_RATE, (label, report.rate, report.disagreements[:3])
    assert all(item["label"].startswith("functionary/") for item in report.disagreements)  # python code only


def test_a_format_template_that_cannot_read_a_turn_is_counted_as_disagreeing():
    fmt = formats.get("polaris")
    broken = formats.get("polaris")
    broken.response_template = {**fmt.response_template, "fields": {
        **fmt.response_template["fields"], "tool_calls": {**fmt.response_template["fields"]["tool_calls"],
                                                          "open": "<|never|>"}}}
    turn = ("t", [{"role": "user", "content": "q"}], None, {"role": "assistant", "content": None,
                                                             "tool_calls": [call("f", {"a": 1})]})
    assert agreement(fmt, [turn]).rate == 1.0
    report = agreement(broken, [turn])
    assert report.rate == 0.0 and report.disagreements[0]["parse"] == (None, [("f", '{"a": 1}')])


# Argument strings hold no "<": a delimiter written inside a JSON string ends a template's region early
# (docs/serving.md); parse decodes the JSON first and is not fooled.
plain_strings = st.text(st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=12)
plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
              plain_strings),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(plain_strings, children, max_size=3)),
    max_leaves=8)
plain_calls = st.builds(call, names, st.dictionaries(plain_strings, plain_values, max_size=4))
plain_prose = st.text(st.characters(blacklist_characters="<>[]{}|", blacklist_categories=("Cs",)), min_size=1,
                      max_size=30).map(str.strip).filter(bool)


@st.composite
def replies(draw):
    tool_calls = draw(st.lists(plain_calls, max_size=3))
    content = draw(st.one_of(st.none(), plain_prose)) if tool_calls else draw(plain_prose)
    return {"role": "assistant", "content": content, **({"tool_calls": tool_calls} if tool_calls else {})}


@pytest.mark.parametrize(("label", "name", "options"), VARIANTS, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(message=replies(), history=st.booleans())
def test_template_inverts_render_assistant(label, name, options, message, history):
    """parse_response(render_assistant(m), prefix=the prompt) gives m back, after earlier turns too."""
    fmt = formats.get(name, **options)
    prompt = [{"role": "user", "content": "q"}]
    if history:
        prompt += [message, {"role": "tool", "name": "f", "content": "{}"}, {"role": "user", "content": "again"}]
    prefix = fmt.render(prompt, add_generation_prompt=True)
    parsed = parse_response(fmt.render_assistant(message), fmt.response_template, prefix=prefix)
    assert client_view(parsed) == client_view(message)


@pytest.mark.parametrize(("label", "name", "options"), VARIANTS, ids=IDS)
def test_template_is_one_vllm_can_serve(label, name, options):
    """vLLM's hf parser serves only content / tool_calls / thinking fields, content as plain text."""
    template = formats.get(name, **options).response_template
    assert set(template["fields"]) == {"content", "tool_calls"} and set(template["defaults"]) == {"role"}
    content = template["fields"]["content"]
    assert content["content"] == "text" and "transform" not in content and "join" not in content


def test_a_custom_native_template_starts_where_its_generation_prompt_ends():
    bundled = formats.get("native")
    custom = formats.get("native", template=bundled.chat_template)
    assert custom.response_template["start_anchor"] == "<|im_start|>assistant\n"
    assert custom.response_template == bundled.response_template


def test_every_tokenizer_the_project_loads_saves_the_response_template(make_cfg, tmp_path):
    """models.load_tokenizer (SFT, DPO and merge all load through it) puts it into tokenizer_config.json."""
    fmt = formats.get("functionary")
    base = models.resolve_model_path(make_cfg().model, [])
    models.load_tokenizer(base, fmt).save_pretrained(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert saved["response_template"] == fmt.response_template
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = 'get_weather\n<|content|>{"city": "Bern"}<|stop|>'
    assert reloaded.parse_response(text, prefix=fmt.render([{"role": "user", "content": "q"}],
                                                            add_generation_prompt=True)) == {
        "role": "assistant", "tool_calls": [call("get_weather", {"city": "Bern"})]}


def test_the_check_script_prints_the_table_and_passes_on_bundled_data(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "check_response_templates.py"),
                             "--demo-limit", "50", "--shared", str(tmp_path / "absent")],
                            capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| polaris | " in result.stdout and "| native mistral | " in result.stdout
