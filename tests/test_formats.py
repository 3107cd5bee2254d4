"""Prompt formats: golden prompts, Jinja == Python rendering on real data, parse round trips (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from transformers.utils.chat_template_utils import render_jinja_template

from polaris_dpo import formats
from polaris_dpo import messages as M
from polaris_dpo.config import DataConfig, FormatConfig
from polaris_dpo.formats import typescript

# Every format and option set under test: (format name, options).
VARIANTS = [
    ("polaris", {}),
    ("polaris", {"fn_role": "tool", "arguments_as_string": True, "config_options": {"Current date": "2026-11-22"}}),
    ("functionary", {}),
    ("functionary", {"version": "v1"}),
    ("chatml_tools", {}),
    ("openchat", {}),
    ("vicuna", {}),
    ("native", {}),
    ("native", {"call_syntax": "mistral"}),
]
IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in options.items() if k != "config_options") for name, options in VARIANTS]


def jinja(fmt, messages, tools=None, add_generation_prompt=False) -> str:
    """The format's chat template rendered exactly as transformers' apply_chat_template renders it."""
    rendered, _ = render_jinja_template([messages], tools=tools or None, chat_template=fmt.chat_template,
                                        add_generation_prompt=add_generation_prompt)
    return rendered[0]


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


# ---------------------------------------------------------------- golden prompts

PASSWORD_TOOL = {"type": "function", "function": {
    "name": "generate_password", "description": "Generate a random password",
    "parameters": {"type": "object", "properties": {"length": {"type": "integer", "description": "The length of the password"}},
                   "required": ["length"]}}}
PASSWORD_CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Generate a password, 42 characters long"},
    {"role": "assistant", "content": None, "tool_calls": [call("generate_password", {"length": 42})]},
    {"role": "tool", "name": "generate_password", "content": '{"result": "87cc47fbc865a290d7c7de4be3c893175c51a566b3"}'},
    {"role": "assistant", "content": "Here is your random password: 87cc47fbc865a290d7c7de4be3c893175c51a566b3. "
                                     "Please make sure to save it in a secure place."},
]


def readme_example(shared_data) -> str:
    readme = (shared_data / "polaris" / "small_README_HEAD.md").read_text(encoding="utf-8")
    block = readme.split("## Example Conversation")[1].split("```\n")[1]
    # "Newlines after the <|im_end|> are included here only for ease of reading."
    return block.replace("<|im_end|>\n", "<|im_end|>").rstrip("\n")


def test_polaris_renders_the_seed_readme_example_exactly(shared_data):
    fmt = formats.get("polaris", fn_role="tool", arguments_as_string=True)
    expected = readme_example(shared_data)
    assert fmt.render(PASSWORD_CHAT, [PASSWORD_TOOL]) == expected
    assert jinja(fmt, PASSWORD_CHAT, [PASSWORD_TOOL]) == expected


def test_polaris_first_commit_variant_uses_fn_role_and_object_arguments(shared_data):
    fmt = formats.get("polaris")  # defaults: the seed's first commit
    expected = (readme_example(shared_data).replace("<|im_start|>tool\n", "<|im_start|>fn\n")
                .replace('"arguments": "{\\"length\\": 42}"', '"arguments": {"length": 42}'))
    assert fmt.render(PASSWORD_CHAT, [PASSWORD_TOOL]) == expected
    assert jinja(fmt, PASSWORD_CHAT, [PASSWORD_TOOL]) == expected


def test_polaris_configuration_block_without_functions_and_with_options():
    fmt = formats.get("polaris", config_options={"Current date": "2026-11-22", "User name": "Ann"})
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = ("<|im_start|>system\n## Configuration\n\nFunctions: disabled\nCurrent date: 2026-11-22\nUser name: Ann"
                "\n\n---\n\nBe brief.<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n")
    assert fmt.render(chat, None, add_generation_prompt=True) == expected
    assert jinja(fmt, chat, None, add_generation_prompt=True) == expected


def functionary_case(shared_data, name):
    return json.loads((shared_data / "functionary" / name).read_text(encoding="utf-8"))


def test_functionary_v2_reproduces_prompt_test_v2_byte_for_byte(shared_data):
    case = functionary_case(shared_data, "test_case.json")
    expected = (shared_data / "functionary" / "prompt_test_v2.txt").read_text(encoding="utf-8")
    fmt = formats.get("functionary")
    assert fmt.render(case["messages"], case["tools"]) == expected
    assert jinja(fmt, case["messages"], case["tools"]) == expected


def legacy_to_tools_shape(case):
    """functions / function_call / role function -> tools / tool_calls / role tool, argument strings kept verbatim."""
    messages = []
    for message in case["messages"]:
        message = dict(message)
        if message["role"] == "function":
            message["role"] = "tool"
        if "function_call" in message:
            message["tool_calls"] = [{"type": "function", "function": message.pop("function_call")}]
        messages.append(message)
    return messages, [{"type": "function", "function": f} for f in case["functions"]]


def test_functionary_v1_reproduces_prompt_test_v1_byte_for_byte(shared_data):
    messages, tools = legacy_to_tools_shape(functionary_case(shared_data, "test_case_v1.json"))
    expected = (shared_data / "functionary" / "prompt_test_v1.txt").read_text(encoding="utf-8")
    fmt = formats.get("functionary", version="v1")
    assert fmt.render(messages, tools) == expected
    assert jinja(fmt, messages, tools) == expected


def test_functionary_parses_its_own_golden_turns(shared_data):
    fmt = formats.get("functionary")
    turn = ('all\n<|content|>I will get the price of 2 cars and compare\n<|from|>assistant\n<|recipient|>get_car_price\n'
            '<|content|>{"car_name": "Song"}\n<|from|>assistant\n<|recipient|>get_car_price\n<|content|>{"car_name": "Tang"}<|stop|>')
    assert fmt.parse(turn) == {"role": "assistant", "content": "I will get the price of 2 cars and compare",
                               "tool_calls": [call("get_car_price", {"car_name": "Song"}),
                                              call("get_car_price", {"car_name": "Tang"})]}
    code = "python\n<|content|>l.remove(round(3.6))\nl<|stop|>"
    assert fmt.parse(code)["tool_calls"] == [call("python", {"code": "l.remove(round(3.6))\nl"})]
    v1 = formats.get("functionary", version="v1")
    assert v1.parse('I need the price\n<|START_OF_FUNCTION_CALL|>get_car_price:\n{\n  "car_name": "Song"\n}<|END_OF_FUNCTION_CALL|>') == {
        "role": "assistant", "content": "I need the price", "tool_calls": [call("get_car_price", {"car_name": "Song"})]}


# ---------------------------------------------------------------- TypeScript namespace

RICH_TOOL = {"type": "function", "function": {
    "name": "book_trip", "description": "Book a trip",
    "parameters": {"type": "object", "required": ["city", "travellers"], "properties": {
        "city": {"type": "string", "description": "Destination\ncity"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        "nights": {"type": "integer", "minimum": 1, "nullable": True},
        "travellers": {"type": "array", "description": "Who travels", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "age": {"type": "number", "description": "Age in years."}}}},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "any_value": {},
        "choice": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "flags": {"type": ["boolean", "null"]},
        "options": {"type": "object", "properties": {"fast": {"type": "boolean", "default": False}}},
    }}}}
RICH_NAMESPACE = """// Supported function definitions that should be called when necessary.
namespace functions {

// Book a trip
type book_trip = (_: {
// Destination city.
city: string,
// Default="celsius".
unit?: "celsius" | "fahrenheit",
nights?: number | null,
// Who travels.
travellers: {
    name: string,
    // Age in years.
    age?: number,
}[],
tags?: ("a" | "b")[],
matrix?: number[][],
any_value?: any,
choice?: string | number,
flags?: boolean | null,
options?: {
    // Default=false.
    fast?: boolean,
},
}) => any;

// No parameters
type ping = () => any;

} // namespace functions"""


@pytest.mark.parametrize("code", ["{k: v for k, v in stats.items() if v > 0}", "{1, 2} | {3}",
                                  '{"a": 1}.keys()', "[x for x in {}]"])
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_functionary_python_code_starting_like_json_round_trips(code, version):
    fmt = formats.get("functionary", version=version)
    message = {"role": "assistant", "content": None, "tool_calls": [call("python", {"code": code})]}
    assert fmt.parse(fmt.render_assistant(message)) == message
    assert M.normalize_call({"name": "python", "arguments": code}, "x")["function"]["arguments"] == {"code": code}
    json_arguments = {"role": "assistant", "content": None, "tool_calls": [call("python", {"code": "1", "timeout": 5})]}
    assert fmt.parse(fmt.render_assistant(json_arguments)) == json_arguments


def test_typescript_namespace_covers_the_schema_features_in_python_and_jinja():
    tools = [RICH_TOOL, {"type": "function", "function": {"name": "ping", "description": "No parameters"}}]
    assert typescript.namespace(tools) == RICH_NAMESPACE
    template = typescript.JINJA_MACROS + "{{- ts_namespace(tools) -}}"
    rendered, _ = render_jinja_template([[]], tools=tools, chat_template=template)
    assert rendered[0] == RICH_NAMESPACE


# ---------------------------------------------------------------- Jinja == Python on real conversations

def shared_conversations(shared_data, tmp_path) -> list[tuple[str, list, list]]:
    """(label, messages, tools) from every source in ../shared/data a format can express."""
    from polaris_dpo import readers

    out = []
    for name in ("test_case.json", "test_case_v2.json"):
        case = functionary_case(shared_data, name)
        out.append((f"functionary/{name}", case["messages"], case["tools"]))
    messages, tools = legacy_to_tools_shape(functionary_case(shared_data, "test_case_v1.json"))
    out.append(("functionary/test_case_v1.json", messages, tools))
    sources = [
        {"reader": "sharegpt", "root": str(shared_data / "glaive"), "path": "glaive_toolcall_en_demo.json", "limit": 40},
        *({"reader": "bfcl", "root": str(shared_data / "bfcl"), "path": f"BFCL_v4_{c}.json",
           "answers": f"possible_answer/BFCL_v4_{c}.json", "limit": 8}
          for c in ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "simple_java")),
        {"reader": "bfcl", "root": str(shared_data / "bfcl"), "path": "BFCL_v4_irrelevance.json", "limit": 5},
    ]
    for i, source in enumerate(sources):
        data_cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), source)
        conversations, counts = readers.read_all(data_cfg, tmp_path / f"read{i}")
        assert counts["read"] == counts["kept"] + counts["quarantined"] and counts["kept"] > 0
        out += [(f"{source['path']}#{c['row']}", c["messages"], c["tools"]) for c in conversations]
    return out


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_jinja_template_renders_what_python_renders_on_shared_data(name, options, shared_data, tmp_path):
    fmt = formats.get(name, **options)
    conversations = shared_conversations(shared_data, tmp_path)
    assert len(conversations) > 60
    for label, messages, tools in conversations:
        for generation_prompt in (False, True):
            prompt = messages if not generation_prompt else messages[:-1]
            expected = fmt.render(prompt, tools, add_generation_prompt=generation_prompt)
            assert jinja(fmt, prompt, tools, add_generation_prompt=generation_prompt) == expected, label


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_render_is_prompt_plus_assistant_text(name, options):
    """render(prompt + [reply]) == render(prompt, generation prompt) + render_assistant(reply) (+ separator)."""
    fmt = formats.get(name, **options)
    prompt = PASSWORD_CHAT[:2]
    reply = PASSWORD_CHAT[2]
    whole = fmt.render([*prompt, reply], [PASSWORD_TOOL])
    assert whole.startswith(fmt.render(prompt, [PASSWORD_TOOL], add_generation_prompt=True) + fmt.render_assistant(reply))
    assert fmt.parse(fmt.render_assistant(reply)) == reply


def test_from_config_passes_only_the_options_a_format_takes():
    cfg = OmegaConf.structured(FormatConfig(name="polaris", fn_role="tool", config_options={"Current date": "x"}))
    fmt = formats.from_config(cfg)
    assert (fmt.fn_role, fmt.config_options) == ("tool", {"Current date": "x"})
    assert formats.from_config(OmegaConf.structured(FormatConfig(name="functionary", version="v1"))).version == "v1"
    with pytest.raises(ValueError, match="fn_role"):
        formats.get("polaris", fn_role="function")


def test_native_accepts_a_template_string_file_or_tokenizer_folder(tmp_path):
    bundled = formats.get("native")
    (tmp_path / "tpl.jinja").write_text(bundled.chat_template, encoding="utf-8")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": bundled.chat_template, "eos_token": "<|im_end|>"}), encoding="utf-8")
    reply = PASSWORD_CHAT[2]
    for template in (bundled.chat_template, str(tmp_path / "tpl.jinja"), str(tmp_path / "tok")):
        custom = formats.get("native", template=template)
        assert custom.render(PASSWORD_CHAT, [PASSWORD_TOOL]) == bundled.render(PASSWORD_CHAT, [PASSWORD_TOOL])
        assert custom.render_assistant(reply).startswith(bundled.render_assistant(reply))
    from_folder = formats.get("native", template=str(tmp_path / "tok"))
    assert from_folder.eos_token == "<|im_end|>"
    assert from_folder.render_assistant(reply) == bundled.render_assistant(reply)
    assert from_folder.parse(from_folder.render_assistant(reply)) == reply
    with pytest.raises(ValueError, match="neither"):
        formats.get("native", template=str(tmp_path / "missing"))


def test_vicuna_context_prompt_builds_airoboros_blocks():
    vicuna = formats.get("vicuna")
    text = vicuna.context_prompt(
        [{"text": "Blueberries are blue.", "metadata": {"date": "2021-01-01", "url": "https://x.y/1"}},
         {"text": "Grass is green."}], "What colour are blueberries? Cite your source.")
    assert text == ("BEGININPUT\nBEGINCONTEXT\ndate: 2021-01-01\nurl: https://x.y/1\nENDCONTEXT\nBlueberries are blue.\n"
                    "ENDINPUT\nBEGININPUT\nBEGINCONTEXT\nENDCONTEXT\nGrass is green.\nENDINPUT\n"
                    "BEGININSTRUCTION\nWhat colour are blueberries? Cite your source.\nENDINSTRUCTION")
    with pytest.raises(ValueError, match=r"documents\[0\]\.text"):
        vicuna.context_prompt([{"metadata": {}}], "q")


# ---------------------------------------------------------------- parse: round trips and malformed text

CALL_TOKENS = ["<|fn_start|>", "<|fn_end|>", "<|im_end|>", "<|stop|>", "<tool_call>", "</tool_call>", "[TOOL_CALLS]",
               "<functioncall>", "</s>", "<|END_OF_FUNCTION_CALL|>", "\n<|from|>assistant\n<|recipient|>", '{"function": 1}']
json_strings = st.one_of(st.text(max_size=12), st.sampled_from(CALL_TOKENS), st.sampled_from(['"', "\\", "{", "}]", "\n"]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
              json_strings),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(json_strings, children, max_size=3)),
    max_leaves=8)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,15}", fullmatch=True).filter(lambda n: n not in ("all", "python"))
calls = st.builds(call, names, st.dictionaries(json_strings, json_values, max_size=4))
prose = st.text(st.characters(blacklist_characters="<>[]{}|", blacklist_categories=("Cs",)), min_size=1, max_size=30)
prose = prose.map(str.strip).filter(bool)


@st.composite
def assistant_messages(draw):
    tool_calls = draw(st.lists(calls, max_size=3))
    content = draw(st.one_of(st.none(), prose)) if tool_calls else draw(prose)
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=assistant_messages())
def test_parse_inverts_render_assistant(name, options, message):
    fmt = formats.get(name, **options)
    assert fmt.parse(fmt.render_assistant(message)) == message


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
@settings(max_examples=80, deadline=None)
@given(pieces=st.lists(st.one_of(st.sampled_from(CALL_TOKENS + ['{"name": "f", "arguments": {', "all\n<|content|>",
                                                                  "get_x\n<|content|>", "function\nfunctions.f(",
                                                                  '<|START_OF_FUNCTION_CALL|>f:\n', "}", ")", "]"]),
                                 st.text(max_size=8)), max_size=8))
def test_parse_never_raises_on_model_output(name, options, pieces):
    parsed = formats.get(name, **options).parse("".join(pieces))
    assert parsed["role"] == "assistant"
    assert "parse_error" in parsed or isinstance(parsed.get("tool_calls", []), list)


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_parse_of_a_call_nested_beyond_the_json_decoder_is_a_parse_error(name, options):
    fmt = formats.get(name, **options)
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "get_x", "arguments": {"a": "MARK"}}}]}
    rendered = fmt.render_assistant(call)
    looping = rendered[:rendered.index("MARK")].rstrip('\\"') + "[" * 5000  # a model stuck on `[`
    parsed = fmt.parse(looping)
    assert parsed["parse_error"].reason and "tool_calls" not in parsed


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_an_empty_output_is_no_answer_in_every_format(name, options):
    fmt = formats.get(name, **options)
    for text in ["", " ", "\n", " \t\r\n"]:
        assert fmt.parse(text) == {"role": "assistant", "content": None}, (name, text)


MALFORMED = {
    "polaris": ['<|fn_start|>{"name": "f", "arguments": {"a": 1}<|fn_end|>', '{"name": "f", "arguments": {}}<|fn_end|>',
                '<|fn_start|>{"name": "f", "arguments": {}}'],
    "functionary": ['get_x\n<|content|>{"a": 1<|stop|>', "get_x<|stop|>"],
    "chatml_tools": ['function\nfunctions.f({"a": 1}', "function\nf<|im_end|>"],
    "openchat": ['Sure.\n<functioncall> {"name": "f", "arguments": {"a": }}'],
    "vicuna": ['{"function": "f", "params": {"a": 1}'],
    "native": ['<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>', 'Hi <tool_call>\n{"name": "f"}'],
}


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_malformed_calls_give_a_parse_error(name, options):
    fmt = formats.get(name, **options)
    texts = MALFORMED[name] if not (name == "native" and options) else ['[TOOL_CALLS][{"name": "f", "arguments": {]']
    if name == "functionary" and options:
        texts = ['<|START_OF_FUNCTION_CALL|>f:\n{"a": 1<|END_OF_FUNCTION_CALL|>']
    for text in texts:
        parsed = fmt.parse(text)
        assert isinstance(parsed.get("parse_error"), formats.ParseError), (text, parsed)
        assert parsed["parse_error"].reason and "tool_calls" not in parsed


def test_prose_and_call_give_both_content_and_calls():
    fmt = formats.get("polaris")
    parsed = fmt.parse('Let me check. <|fn_start|>{"name": "f", "arguments": "{\\"a\\": 1}"}<|fn_end|><|im_end|>')
    assert parsed == {"role": "assistant", "content": "Let me check.", "tool_calls": [call("f", {"a": 1})]}
