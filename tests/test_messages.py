"""Canonical messages: legacy shapes normalised, storage round trips, prediction points, errors naming fields."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polaris_dpo import messages as M

# ---------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.text(max_size=20) | st.floats(
    allow_nan=False, allow_infinity=False, width=32)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=8)
arguments = st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=4)
names = st.text(alphabet=st.characters(categories=("L", "N"), include_characters="_.-"), min_size=1, max_size=16)
texts = st.text(max_size=40)


@st.composite
def conversations(draw):
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts)})
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(texts)})
        calls = [{"type": "function", "function": {"name": draw(names), "arguments": draw(arguments)}}
                 for _ in range(draw(st.integers(0, 2)))]
        assistant = {"role": "assistant", "content": draw(st.none() | texts) if calls else draw(texts)}
        if calls:
            assistant["tool_calls"] = calls
        messages.append(assistant)
        for call in calls:
            messages.append({"role": "tool", "content": draw(texts), "name": call["function"]["name"]})
    tools = [{"type": "function", "function": {"name": draw(names), "parameters": {
        "type": "object", "properties": {"x": {"type": draw(st.sampled_from(["string", "number", "array"]))}}}}}
        for _ in range(draw(st.integers(0, 2)))]
    return {"id": "c1", "source": "t", "row": 0, "messages": messages, "tools": tools,
            "acceptable": None, "preferences": None}


# ---------------------------------------------------------------- round trips

@settings(max_examples=60, deadline=None)
@given(conversations())
def test_storage_round_trip(conversation):
    stored = M.to_storage(conversation)
    assert isinstance(stored["tools"], str)
    for message in stored["messages"]:
        for call in message.get("tool_calls", []):
            assert isinstance(call["function"]["arguments"], str)
    # what a JSONL file or a datasets row gives back
    assert M.from_storage(json.loads(json.dumps(stored))) == conversation


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_normalize_is_idempotent_on_canonical(conversation):
    assert M.normalize_conversation(conversation) == conversation


@settings(max_examples=60, deadline=None)
@given(names, arguments, st.booleans(), st.sampled_from(["function", "fn", "tool"]))
def test_legacy_shapes_normalise_to_canonical(name, args, as_string, result_role):
    encoded = json.dumps(args) if as_string else args
    legacy = {
        "functions": [{"name": name, "parameters": {"type": "dict", "properties": {"v": {"type": "float"}}}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "function_call": {"name": name, "arguments": encoded}},
            {"role": result_role, "content": "42"},
            {"role": "assistant", "content": "done"},
        ],
    }
    out = M.normalize_conversation(legacy)
    assert out["messages"][1] == {"role": "assistant", "content": None,
                                  "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}]}
    assert out["messages"][2] == {"role": "tool", "content": "42", "name": name}
    assert out["tools"] == [{"type": "function", "function": {
        "name": name, "parameters": {"type": "object", "properties": {"v": {"type": "number"}}}}}]


def test_bfcl_schema_types_are_mapped_recursively():
    schema = {"type": "dict", "properties": {
        "point": {"type": "tuple", "items": {"type": "float"}},
        "anything": {"type": "any", "description": "d"},
        "opts": {"type": "dict", "properties": {"n": {"type": "long"}, "s": {"type": "String"}}},
        "m": {"type": "HashMap"}, "arr": {"type": "ArrayList", "items": {"type": "Boolean"}},
    }}
    out = M.normalize_schema(schema)
    assert out == {"type": "object", "properties": {
        "point": {"type": "array", "items": {"type": "number"}},
        "anything": {"description": "d"},
        "opts": {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}},
        "m": {"type": "object"}, "arr": {"type": "array", "items": {"type": "boolean"}},
    }}
    assert schema["type"] == "dict"  # the input is not changed


def test_tools_bare_wrapped_string_and_builtin():
    bare = {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}
    wrapped = {"type": "function", "function": bare}
    assert M.normalize_tools([bare]) == M.normalize_tools([wrapped]) == M.normalize_tools(json.dumps([bare])) \
        == M.normalize_tools([json.dumps(bare)]) == [wrapped]
    assert M.normalize_tools([{"type": "code_interpreter"}]) == [{"type": "code_interpreter"}]
    assert M.normalize_tools(None) == [] and M.normalize_tools("") == []
    assert M.normalize_tool({"name": "g"}) == {"type": "function", "function": {
        "name": "g", "parameters": {"type": "object", "properties": {}}}}


def test_tool_result_names_follow_calls_by_id_and_order():
    msgs = M.normalize_messages([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "function": {"name": "g", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "b", "content": {"ok": True}},
        {"role": "tool", "content": "2"},
    ])
    assert msgs[2] == {"role": "tool", "content": '{"ok": true}', "name": "g", "tool_call_id": "b"}
    assert msgs[3]["name"] == "f"


@pytest.mark.parametrize("message, field", [
    ({"content": "x"}, "messages[0].role: missing"),
    ({"role": "robot", "content": "x"}, "messages[0].role: unknown role 'robot'"),
    ({"role": "user", "content": 3}, "messages[0].content: content must be a string"),
    ({"role": "user", "content": None}, "messages[0].content: a user message needs text"),
    ({"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]},
     "messages[0].tool_calls[0].function.arguments: not valid JSON"),
    ({"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]},
     "messages[0].tool_calls[0].function.arguments: arguments must be a JSON object"),
    ({"role": "assistant", "content": None, "function_call": {"arguments": "{}"}},
     "messages[0].function_call.name: a call needs a non-empty string name"),
    ({"role": "tool", "content": "r"}, "messages[0].name: a tool result with no name answers no earlier call"),
])
def test_errors_name_the_field(message, field):
    with pytest.raises(ValueError) as err:
        M.normalize_messages([message])
    assert str(err.value).startswith(field)


def test_unknown_schema_type_names_the_field():
    with pytest.raises(ValueError, match=r"tools\[0\]\.parameters\.properties\.x\.type: unknown"):
        M.normalize_tools([{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "Date"}}}}])


def test_a_field_name_holding_colon_space_is_named_whole():
    with pytest.raises(M.FieldError) as err:
        M.normalize_tools([{"name": "f", "parameters": {"type": "object", "properties": {"Note: x": {"type": "Date"}}}}])
    assert err.value.field == "tools[0].parameters.properties.Note: x.type"
    assert err.value.reason.startswith("unknown schema type")


def test_draft3_required_true_on_a_property_joins_the_parents_required_list():
    (tool,) = M.normalize_tools([{"name": "f", "parameters": {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "string"}, "b": {"type": "integer", "required": True}, "c": {"type": "string", "required": False},
        "loc": {"type": "object", "required": True, "properties": {"city": {"type": "string", "required": True}}}}}}])
    parameters = tool["function"]["parameters"]
    assert parameters["required"] == ["a", "b", "loc"]
    assert "required" not in parameters["properties"]["b"] and "required" not in parameters["properties"]["c"]
    assert parameters["properties"]["loc"]["required"] == ["city"]
    with pytest.raises(M.FieldError) as err:
        M.normalize_tools([{"name": "f", "parameters": {"type": "object", "required": "a", "properties": {}}}])
    assert err.value.field == "tools[0].parameters.required"


def test_text_content_parts_are_joined_by_line_breaks():
    (message,) = M.normalize_messages([{"role": "user", "content": [
        {"type": "text", "text": "Line one."}, {"type": "text", "text": "Line two."}]}])
    assert message["content"] == "Line one.\nLine two."


def test_examples_positions_and_labelled_last_turn():
    conversation = M.normalize_conversation({"id": "c", "messages": [
        {"role": "user", "content": "1"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "2"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "3"}, {"role": "assistant", "content": "c"}]})
    points = list(M.examples(conversation))
    assert [p["position"] for p in points] == ["first", "middle", "last"]
    assert [p["id"] for p in points] == ["c#1", "c#3", "c#5"]
    assert points[1]["prompt"] == conversation["messages"][:3] and points[1]["reference"]["content"] == "b"
    labelled = {**conversation, "acceptable": [{"name": "f", "arguments": {}}]}
    (only,) = M.examples(labelled)
    assert only["position"] == "last" and only["acceptable"] == labelled["acceptable"]
    single = M.normalize_conversation({"id": "s", "messages": conversation["messages"][:2]})
    assert [p["position"] for p in M.examples(single)] == ["first"]


def test_example_storage_round_trip():
    conversation = M.normalize_conversation({"id": "c", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"a": [1]}}}]}],
        "acceptable": [{"name": "f", "arguments": {"a": [[1], ""]}}]})
    (example,) = M.examples(conversation)
    stored = json.loads(json.dumps(M.to_storage(example)))
    assert isinstance(stored["reference"]["tool_calls"][0]["function"]["arguments"], str)
    assert isinstance(stored["acceptable"], str)
    assert M.from_storage(stored) == example
