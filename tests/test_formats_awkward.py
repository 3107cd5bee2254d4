"""Prompt formats on awkward model output: numbers and strings JSON does not allow, loose whitespace and
spacing, code that looks like JSON, a model template given as a string."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polaris_dpo import formats
from tests.test_formats import IDS, PASSWORD_CHAT, PASSWORD_TOOL, VARIANTS, call, jinja


def assistant(content, *tool_calls) -> dict:
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    return message


def rendered_with(fmt, arguments: dict, marker: str, replacement: str) -> str:
    """A call to get_x rendered by `fmt`, with `marker` in its JSON replaced (as the model might write it)."""
    text = fmt.render_assistant(assistant(None, call("get_x", arguments)))
    assert marker in text
    return text.replace(marker, replacement)


def assert_parse_error(fmt, text: str, *words: str):
    parsed = fmt.parse(text)
    assert "tool_calls" not in parsed and isinstance(parsed.get("parse_error"), formats.ParseError), parsed
    for word in words:
        assert word in parsed["parse_error"].reason, parsed["parse_error"]


# ---------------------------------------------------------------- JSON Python reads but JSON does not allow

@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_a_number_too_long_for_python_is_a_parse_error(name, options):
    fmt = formats.get(name, **options)
    text = rendered_with(fmt, {"n": 123456789}, "123456789", "1" * 5000)  # a model stuck repeating a digit
    assert_parse_error(fmt, text, "invalid JSON", "5000 digits")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1E999"])
@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_nan_and_infinite_numbers_are_a_parse_error(name, options, literal):
    fmt = formats.get(name, **options)
    text = rendered_with(fmt, {"x": [1, {"y": 123456789}]}, "123456789", literal)
    assert_parse_error(fmt, text, "invalid JSON")


@pytest.mark.parametrize("arguments", [{"s": "MARK"}, {"outer": [{"MARK": 1}]}, {"a": {"b": ["ok", "MARK"]}}])
@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_a_lone_surrogate_in_the_arguments_is_a_parse_error(name, options, arguments):
    fmt = formats.get(name, **options)
    text = rendered_with(fmt, arguments, "MARK", "\\ud83d")  # half of an escaped emoji
    assert_parse_error(fmt, text, "surrogate")


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_an_escaped_surrogate_pair_is_a_character(name, options):
    fmt = formats.get(name, **options)
    text = rendered_with(fmt, {"s": "MARK"}, "MARK", "\\ud83d\\ude00")
    assert fmt.parse(text) == assistant(None, call("get_x", {"s": "\U0001F600"}))


@pytest.mark.parametrize("name", ["polaris", "openchat", "vicuna", "native"])
def test_a_lone_surrogate_in_the_function_name_is_a_parse_error(name):
    fmt = formats.get(name)
    text = rendered_with(fmt, {}, '"get_x"', '"get_\\udc00"')
    assert_parse_error(fmt, text, "surrogate")


# ---------------------------------------------------------------- whitespace before the end of the turn

def end_token(fmt, text: str) -> str:
    return next(token for token in [fmt.eos_token, *fmt.stop_strings] if text.endswith(token))


@pytest.mark.parametrize("space", ["\n", " \n\t", "\r\n"])
@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_whitespace_between_a_call_and_the_end_of_turn_is_skipped(name, options, space):
    fmt = formats.get(name, **options)
    message = assistant(None, call("get_x", {"a": 1}))
    text = fmt.render_assistant(message)
    token = end_token(fmt, text)
    assert fmt.parse(text[:-len(token)] + space + token) == message
    assert fmt.parse(text[:-len(token)] + space) == message  # generation stopped on the token and dropped it


def test_whitespace_between_calls_is_skipped_in_functionary_v2_and_chatml_tools():
    message = assistant(None, call("get_x", {"a": 1}), call("get_y", {}))
    v2 = formats.get("functionary")
    assert v2.parse('get_x\n<|content|>{"a": 1} \n\n<|from|>assistant\n<|recipient|>get_y\n<|content|>{}\n<|stop|>') == message
    chatml = formats.get("chatml_tools")
    assert chatml.parse('function\nfunctions.get_x({"a": 1})\n<|im_end|>\n<|im_start|>function\nfunctions.get_y({}) '
                        '<|im_end|>') == message


def test_chatml_tools_reads_a_space_before_the_parenthesis():
    parsed = formats.get("chatml_tools").parse('function\nfunctions.get_weather ({"city": "Paris"})<|im_end|>')
    assert parsed == assistant(None, call("get_weather", {"city": "Paris"}))


# ---------------------------------------------------------------- vicuna: call objects however written

@pytest.mark.parametrize("text", [
    '{"params": {"city": "Paris"}, "function": "get_weather"}</s>',
    '{ "function": "get_weather", "params": {"city": "Paris"}}</s>',
    '{\n  "function": "get_weather",\n  "params": {\n    "city": "Paris"\n  }\n}</s>',
    '  {"function":"get_weather","params":{"city":"Paris"}}\n</s>',
])
def test_vicuna_reads_a_call_object_in_any_key_order_and_spacing(text):
    expected = assistant(None, call("get_weather", {"city": "Paris"}))
    assert formats.get("vicuna").parse(text) == expected
    assert formats.get("vicuna").parse("Let me look.\n" + text) == {**expected, "content": "Let me look."}


@pytest.mark.parametrize("text", ["{1, 2} is a set.", '{"name": "get_weather", "arguments": {}}',
                                  '{"a": 1} holds one key.\n{\n  "b": 2\n}', 'Use {"function": "f"} to call f.'])
def test_vicuna_keeps_prose_that_starts_with_a_brace(text):
    assert formats.get("vicuna").parse(text + "</s>") == assistant(text)


@pytest.mark.parametrize("text", ['{\n  "function": "get_weather",\n  "params": {', '{ "function": "f", "params": {"a": }}',
                                  '{"function": 1, "params": {}}', '{"function": "f", "params": {"x": NaN}}'])
def test_vicuna_malformed_calls_still_give_a_parse_error(text):
    assert_parse_error(formats.get("vicuna"), text + "</s>")


# ---------------------------------------------------------------- functionary: python code that reads like JSON

PYTHON_CODES = ["{}", '{"a": 1}', '{"code": "x"}', ' {"a": [1, 2]}\n', "{1, 2}", "{k: v for k, v in d.items()}",
                '{"a": 1}.keys()', "x = {}\n{}"]


@pytest.mark.parametrize("code", PYTHON_CODES)
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_functionary_python_code_wrapped_in_braces_round_trips_and_jinja_agrees(code, version):
    fmt = formats.get("functionary", version=version)
    message = assistant(None, call("python", {"code": code}))
    assert fmt.parse(fmt.render_assistant(message)) == message
    chat = [*PASSWORD_CHAT[:2], message]
    assert jinja(fmt, chat, [PASSWORD_TOOL]) == fmt.render(chat, [PASSWORD_TOOL])


FUNCTIONARY_TOKENS = ("<|stop|>", "<|from|>", "<|recipient|>", "<|content|>", "<|END_OF_FUNCTION_CALL|>",
                      "<|START_OF_FUNCTION_CALL|>", "<|END_OF_ASSISTANT|>")
python_code = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=25),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(json.dumps),
    st.tuples(st.sampled_from(["", " ", "\n"]), st.sampled_from(["{", "{}", '{"a": 1}']),
              st.text(max_size=5), st.sampled_from(["", "}", "} ", "}\n"])).map("".join),
).filter(lambda code: not any(token in code for token in FUNCTIONARY_TOKENS))


@pytest.mark.parametrize("version", ["v2", "v1"])
@settings(max_examples=150, deadline=None)
@given(code=python_code)
def test_functionary_any_python_code_round_trips(version, code):
    fmt = formats.get("functionary", version=version)
    message = assistant(None, call("python", {"code": code}))
    assert fmt.parse(fmt.render_assistant(message)) == message


# ---------------------------------------------------------------- native: a template given as a string or file

NATIVE_REPLIES = [assistant("Hello"), assistant(None, call("get_x", {"a": 1})),
                  assistant("Let me check.", call("get_x", {"a": 1}), call("get_y", {}))]


@pytest.mark.parametrize("reply", NATIVE_REPLIES)
@pytest.mark.parametrize("given_as", ["string", "file"])
def test_native_template_string_or_file_infers_the_end_of_turn_token(given_as, reply, tmp_path):
    bundled = formats.get("native")
    template = bundled.chat_template
    if given_as == "file":
        (tmp_path / "tpl.jinja").write_text(template, encoding="utf-8")
        template = str(tmp_path / "tpl.jinja")
    fmt = formats.get("native", template=template)
    assert fmt.eos_token == "<|im_end|>"
    assert fmt.render_assistant(reply) == bundled.render_assistant(reply)
    assert fmt.parse(fmt.render_assistant(reply)) == reply


def test_native_template_that_ends_a_turn_with_nothing_has_no_end_token():
    fmt = formats.get("native", template=("{%- for m in messages -%}{{- m['role'] + ': ' + m['content'] + '\n' -}}{%- endfor -%}"
                                          "{%- if add_generation_prompt -%}{{- 'assistant: ' -}}{%- endif -%}"))
    assert fmt.eos_token == ""
    assert fmt.parse(fmt.render_assistant(assistant("Hello"))) == assistant("Hello")
