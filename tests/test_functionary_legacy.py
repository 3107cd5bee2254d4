"""Legacy OpenAI shapes (`function_call` on an assistant turn, the `function` role) never lose a call,
in any format."""

from __future__ import annotations

import pytest

from polaris_dpo import formats
from polaris_dpo.messages import FieldError

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
LEGACY = [
    {"role": "user", "content": "What is the weather like?"},
    {"role": "assistant", "content": None,
     "function_call": {"name": "get_weather", "arguments": '{"city": "Zanzibar-7"}'}},
    {"role": "function", "name": "get_weather", "content": '{"temperature": 31}'},
    {"role": "assistant", "content": "It is 31 degrees."},
]
VARIANTS = [pytest.param(name, options, id=f"{name}{'-' + options['version'] if options else ''}")
            for name in formats.FORMATS
            for options in ([{"version": "v2"}, {"version": "v1"}] if name == "functionary" else [{}])]


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_legacy_function_call_is_rendered(name, options):
    fmt = formats.get(name, **options)
    text = fmt.render(LEGACY, tools=TOOLS)
    call_turn = fmt.render(LEGACY[:2])  # no tools: the name can only come from the call
    assert "get_weather" in call_turn and "Zanzibar-7" in call_turn, call_turn
    assert '{"temperature": 31}' in text and "It is 31 degrees." in text


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_a_legacy_call_renders_as_the_canonical_call(name, options):
    fmt = formats.get(name, **options)
    canonical = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zanzibar-7"}}}]}
    assert fmt.render_assistant(LEGACY[1]) == fmt.render_assistant(canonical)
    assert fmt.render(LEGACY[:2]) == fmt.render([LEGACY[0], canonical])
    assert fmt.parse(fmt.render_assistant(LEGACY[1]))["tool_calls"] == canonical["tool_calls"]


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_a_legacy_call_that_cannot_be_read_is_named(name, options):
    broken = [LEGACY[0], {"role": "assistant", "content": None, "function_call": {"arguments": "{}"}}]
    with pytest.raises(FieldError, match=r"messages\[1\]\.function_call\.name"):
        formats.get(name, **options).render(broken)
