"""The judge: every category with hand-made cases, BFCL argument semantics, order of checks, options."""

from __future__ import annotations

import json
import re

import pytest

from polaris_dpo.formats.base import ParseError
from polaris_dpo.judge import JudgeOptions, fix_spacing, judge, judge_message


class CallTokensFormat:
    """A test double of a format's parse: calls between <|fn_start|> and <|fn_end|>, prose around them."""

    CALL = re.compile(r"<\|fn_start\|>(.*?)<\|fn_end\|>", re.DOTALL)

    def parse(self, text: str) -> dict:
        calls = []
        for body in self.CALL.findall(text):
            try:
                data = json.loads(body)
            except json.JSONDecodeError as err:
                return {"role": "assistant", "content": text, "parse_error": ParseError(str(err), body)}
            calls.append({"type": "function", "function": {"name": data["name"], "arguments": data["arguments"]}})
        if text.count("<|fn_start|>") != len(calls):
            return {"role": "assistant", "content": text, "parse_error": ParseError("unbalanced <|fn_start|>", text)}
        content = self.CALL.sub("", text).strip()
        return {"role": "assistant", "content": content or None, "tool_calls": calls}


FMT = CallTokensFormat()

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
    "type": "object", "required": ["city"],
    "properties": {"city": {"type": "string"}, "unit": {"type": "string"}, "days": {"type": "integer"},
                   "lat": {"type": "number"}, "detailed": {"type": "boolean"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "required": ["zone"], "properties": {"zone": {"type": "string"}}}}}


def call(name, **arguments):
    return f'<|fn_start|>{json.dumps({"name": name, "arguments": arguments})}<|fn_end|>'


def bfcl_example(*acceptable, tools=(WEATHER, TIME)):
    return {"id": "x#1", "tools": list(tools), "acceptable": list(acceptable), "prompt": [],
            "reference": None, "position": "first"}


def reference_example(reference, tools=(WEATHER, TIME)):
    return {"id": "r#1", "tools": list(tools), "acceptable": None, "prompt": [], "reference": reference,
            "position": "last"}


WEATHER_BERLIN = {"name": "get_weather", "arguments": {"city": ["Berlin", "Berlin, Germany"], "unit": ["celsius", ""],
                                                       "days": [3, ""]}}
TEXT_REFERENCE = reference_example({"role": "assistant", "content": "It is sunny."})


@pytest.mark.parametrize("text", [
    call("get_weather", city="Berlin"),
    call("get_weather", city="berlin, germany", unit="celsius"),  # bfcl folding of case and punctuation
    call("get_weather", unit="celsius", days=3, city="Berlin"),
])
def test_ok_calls(text):
    verdict = judge(text, bfcl_example(WEATHER_BERLIN), FMT)
    assert verdict.category == "ok", verdict.detail
    assert verdict.correction is None


def test_ok_text_answer():
    verdict = judge("It is sunny in Berlin today: 21 degrees, at 12:30.", TEXT_REFERENCE, FMT)
    assert (verdict.category, verdict.detail) == ("ok", "text answer")


def test_missed_call():
    verdict = judge("Berlin is sunny, I think.", bfcl_example(WEATHER_BERLIN), FMT)
    assert verdict.category == "missed_call"
    assert "get_weather" in verdict.detail


def test_unwanted_call_on_text_reference_and_bfcl_irrelevance():
    assert judge(call("get_time", zone="UTC"), TEXT_REFERENCE, FMT).category == "unwanted_call"
    irrelevance = reference_example({"role": "assistant", "content": None})
    verdict = judge(call("get_time", zone="UTC"), irrelevance, FMT)
    assert verdict.category == "unwanted_call" and "get_time" in verdict.detail
    assert judge("I cannot help with that.", irrelevance, FMT).category == "ok"


def test_wrong_function():
    verdict = judge(call("get_time", zone="Europe/Berlin"), bfcl_example(WEATHER_BERLIN), FMT)
    assert verdict.category == "wrong_function"
    assert "'get_weather'" in verdict.detail and "'get_time'" in verdict.detail


@pytest.mark.parametrize("arguments, fragment", [
    ({"city": "Paris"}, "argument 'city': expected one of ['Berlin', 'Berlin, Germany'], got 'Paris'"),
    ({"unit": "celsius"}, "argument 'city': required, missing"),
    ({"city": "Berlin", "lat": 52.5}, "argument 'lat': not expected"),
    ({"city": "Berlin", "days": "3"}, "argument 'days': expected type integer, got '3'"),
    ({"city": "Berlin", "days": True}, "argument 'days': expected type integer, got True"),
    ({"city": "Berlin", "unit": "kelvin"}, "argument 'unit': expected one of ['celsius'], got 'kelvin'"),
])
def test_wrong_arguments_detail_names_argument_expected_and_got(arguments, fragment):
    verdict = judge(call("get_weather", **arguments), bfcl_example(WEATHER_BERLIN), FMT)
    assert verdict.category == "wrong_arguments"
    assert fragment in verdict.detail


def test_optional_argument_without_empty_string_must_be_given():
    acceptable = {"name": "get_weather", "arguments": {"city": ["Berlin"], "unit": ["celsius"]}}
    verdict = judge(call("get_weather", city="Berlin"), bfcl_example(acceptable), FMT)
    assert verdict.category == "wrong_arguments"
    assert "argument 'unit': missing" in verdict.detail


def test_int_accepted_for_number_but_not_the_reverse():
    acceptable = {"name": "get_weather", "arguments": {"city": ["Berlin"], "lat": [52.0]}}
    assert judge(call("get_weather", city="Berlin", lat=52), bfcl_example(acceptable), FMT).ok
    acceptable = {"name": "get_weather", "arguments": {"city": ["Berlin"], "days": [3]}}
    assert judge(call("get_weather", city="Berlin", days=3.5), bfcl_example(acceptable), FMT).category == \
        "wrong_arguments"


def test_check_types_off_lets_a_string_number_through_only_if_values_match():
    acceptable = {"name": "get_weather", "arguments": {"city": ["Berlin"], "days": [3]}}
    text = call("get_weather", city="Berlin", days="3")
    verdict = judge(text, bfcl_example(acceptable), FMT)
    assert verdict.category == "wrong_arguments" and "expected type integer" in verdict.detail
    assert judge(text, bfcl_example(acceptable), FMT, JudgeOptions(check_types=False)).ok
    four = call("get_weather", city="Berlin", days="4")
    assert judge(four, bfcl_example(acceptable), FMT, JudgeOptions(check_types=False)).category == "wrong_arguments"


@pytest.mark.parametrize(("want", "got", "ok"), [
    (3.5, "3.5", True), (2, "2.0", True), (3, " 3 ", True), (True, "true", True), (False, "False", True),
    (3.5, "35", False), (1.5, 15, False), (3, "-3", False), (-3, "3", False), (10, "1.0", False),
    (True, "1", False), (3, "three", False), (3, "nan", False),
])
def test_check_types_off_accepts_the_same_value_spelled_as_another_type_only(want, got, ok):
    acceptable = {"name": "get_weather", "arguments": {"city": ["Berlin"], "days": [want]}}
    verdict = judge(call("get_weather", city="Berlin", days=got), bfcl_example(acceptable), FMT,
                    JudgeOptions(check_types=False))
    assert verdict.ok is ok, verdict.detail


def test_a_value_the_answer_key_lists_passes_whatever_the_declared_type():
    # BFCL lists null defaults and variable names ("data['sales']" for an array) as acceptable values
    acceptable = {"name": "get_weather", "arguments": {"city": ["Berlin"], "unit": [None], "lat": ["pos.lat"]}}
    assert judge(call("get_weather", city="Berlin", unit=None, lat="pos.lat"), bfcl_example(acceptable), FMT).ok


def test_string_options_exact_bfcl_loose():
    acceptable = {"name": "get_weather", "arguments": {"city": ["New York"]}}
    example = bfcl_example(acceptable)
    folded = call("get_weather", city="new-york")
    longer = call("get_weather", city="New York City")
    assert judge(folded, example, FMT, {"strings": "exact"}).category == "wrong_arguments"
    assert judge(folded, example, FMT, {"strings": "bfcl"}).ok
    assert judge(longer, example, FMT, {"strings": "bfcl"}).category == "wrong_arguments"
    assert judge(longer, example, FMT, {"strings": "loose"}).ok
    with pytest.raises(ValueError, match="judge.strings"):
        judge(folded, example, FMT, {"strings": "fuzzy"})


def test_nested_bfcl_dict_and_list_values():
    tool = {"type": "function", "function": {"name": "order", "parameters": {"type": "object", "properties": {
        "items": {"type": "array"}, "prefs": {"type": "object"}}}}}
    acceptable = {"name": "order", "arguments": {"items": [["tea", "milk"]],
                                                 "prefs": [{"size": ["large"], "note": ["hot", ""]}]}}
    example = bfcl_example(acceptable, tools=[tool])
    assert judge(call("order", items=["Tea", "milk"], prefs={"size": "large"}), example, FMT).ok
    assert judge(call("order", items=["tea", "milk"], prefs={"size": "large", "note": "hot"}), example, FMT).ok
    assert not judge(call("order", items=["milk", "tea"], prefs={"size": "large"}), example, FMT).ok
    assert not judge(call("order", items=["tea", "milk"], prefs={"size": "small"}), example, FMT).ok
    assert not judge(call("order", items=["tea", "milk"], prefs={"size": "large", "x": 1}), example, FMT).ok


def test_parallel_calls_any_order_with_a_proper_assignment():
    # the first got call fits both expected calls; a greedy matcher would take the wrong one and fail
    acceptable = [{"name": "get_weather", "arguments": {"city": ["Berlin", "Paris"], "unit": ["", "celsius"]}},
                  {"name": "get_weather", "arguments": {"city": ["Berlin"], "unit": [""]}}]
    text = call("get_weather", city="Berlin") + call("get_weather", city="Paris")
    assert judge(text, bfcl_example(*acceptable), FMT).ok
    swapped = call("get_weather", city="Paris") + call("get_weather", city="Berlin")
    assert judge(swapped, bfcl_example(*acceptable), FMT).ok
    mixed = call("get_time", zone="UTC") + call("get_weather", city="Berlin")
    two = [{"name": "get_weather", "arguments": {"city": ["Berlin"]}}, {"name": "get_time", "arguments": {"zone": ["UTC"]}}]
    assert judge(mixed, bfcl_example(*two), FMT).ok


def test_parallel_wrong_arguments_names_the_call():
    two = [{"name": "get_weather", "arguments": {"city": ["Berlin"]}}, {"name": "get_time", "arguments": {"zone": ["UTC"]}}]
    verdict = judge(call("get_weather", city="Berlin") + call("get_time", zone="CET"), bfcl_example(*two), FMT)
    assert verdict.category == "wrong_arguments"
    assert "call 2 (get_time)" in verdict.detail and "'CET'" in verdict.detail
    calls = verdict.correction["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Berlin"}, {"zone": "UTC"}]


def test_parallel_correction_changes_the_fewest_values():
    # greedy pairing would send the first call to the first expected call and change three values
    acceptable = [{"name": "get_weather", "arguments": {"city": ["Berlin"], "days": [1]}},
                  {"name": "get_weather", "arguments": {"city": ["Paris"], "days": [2]}}]
    text = call("get_weather", city="Berlin", days=2) + call("get_weather", city="Berlin", days=1)
    verdict = judge(text, bfcl_example(*acceptable), FMT)
    assert verdict.category == "wrong_arguments"
    calls = verdict.correction["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Paris", "days": 2}, {"city": "Berlin", "days": 1}]
    assert judge_message(verdict.correction, bfcl_example(*acceptable)).ok


def test_wrong_call_count():
    two = [{"name": "get_weather", "arguments": {"city": ["Berlin"]}}, {"name": "get_time", "arguments": {"zone": ["UTC"]}}]
    verdict = judge(call("get_weather", city="Berlin"), bfcl_example(*two), FMT)
    assert verdict.category == "wrong_call_count"
    assert "expected 2 call(s)" in verdict.detail and "got 1" in verdict.detail
    extra = call("get_weather", city="Berlin") * 2
    assert judge(extra, bfcl_example(WEATHER_BERLIN), FMT).category == "wrong_call_count"


def test_malformed_call_wins_over_everything():
    broken = '<|fn_start|>{"name": "get_weather", "arguments": {"city": "Berlin"}<|fn_end|>'
    for text in (broken, "Sure! " + broken, "Here you go  ,friend " + broken):
        verdict = judge(text, bfcl_example(WEATHER_BERLIN), FMT)
        assert verdict.category == "malformed_call"
        assert verdict.detail.startswith("call does not parse")
    assert judge(broken, TEXT_REFERENCE, FMT).category == "malformed_call"


def test_text_around_call_and_its_correction():
    verdict = judge("Let me check that for you. " + call("get_weather", city="Berlin"), bfcl_example(WEATHER_BERLIN), FMT)
    assert verdict.category == "text_around_call"
    assert verdict.correction["content"] is None
    assert verdict.correction["tool_calls"][0]["function"]["arguments"] == {"city": "Berlin"}
    assert judge_message(verdict.correction, bfcl_example(WEATHER_BERLIN)).ok
    off = JudgeOptions(call_alone=False)
    assert judge("Let me check. " + call("get_weather", city="Berlin"), bfcl_example(WEATHER_BERLIN), FMT, off).ok


def test_prose_around_a_wrong_call_is_the_call_failure():
    verdict = judge("Checking. " + call("get_weather", city="Paris"), bfcl_example(WEATHER_BERLIN), FMT)
    assert verdict.category == "wrong_arguments"


def test_bad_spacing_and_its_correction():
    verdict = judge("The answer is:123 ,as  expected.", TEXT_REFERENCE, FMT)
    assert verdict.category == "bad_spacing"
    assert verdict.correction == {"role": "assistant", "content": "The answer is: 123, as expected."}
    assert judge_message(verdict.correction, TEXT_REFERENCE).ok
    assert judge("Answer:123", TEXT_REFERENCE, FMT, JudgeOptions(check_spacing=False)).ok
    assert fix_spacing("Answer:123") == "Answer: 123"


def test_wrong_arguments_correction_keeps_own_good_values():
    reference = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Berlin", "unit": "celsius"}}}]}
    example = reference_example(reference)
    verdict = judge(call("get_weather", unit="kelvin", city="Berlin", days=2), example, FMT)
    assert verdict.category == "wrong_arguments"
    fixed = verdict.correction["tool_calls"][0]["function"]["arguments"]
    assert fixed == {"unit": "celsius", "city": "Berlin"}
    assert judge_message(verdict.correction, example).ok


def test_an_empty_string_in_a_reference_call_is_a_value_not_bfcls_may_be_left_out():
    # glaive row 5926: search_books(query="", author="George Orwell"), query required
    books = {"type": "function", "function": {"name": "search_books", "parameters": {
        "type": "object", "required": ["query"],
        "properties": {"query": {"type": "string"}, "author": {"type": "string"}}}}}
    reference = {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
        "name": "search_books", "arguments": {"query": "", "author": "George Orwell"}}}]}
    example = reference_example(reference, tools=(books,))
    assert judge(call("search_books", query="", author="George Orwell"), example, FMT).ok
    left_out = judge(call("search_books", author="George Orwell"), example, FMT)
    assert (left_out.category, left_out.detail) == ("wrong_arguments", "argument 'query': required, missing")
    assert left_out.correction["tool_calls"][0]["function"]["arguments"] == {"author": "George Orwell", "query": ""}
    other = judge(call("search_books", query="1984", author="George Orwell"), example, FMT)
    assert other.detail == "argument 'query': expected one of [''], got '1984'"
    assert other.correction["tool_calls"][0]["function"]["arguments"] == {"query": "", "author": "George Orwell"}


def test_reference_with_string_arguments_is_read():
    reference = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]}
    assert judge(call("get_time", zone="UTC"), reference_example(reference), FMT).ok


def test_options_from_config(make_cfg):
    cfg = make_cfg("judge.strings=exact", "judge.call_alone=false")
    options = JudgeOptions.from_config(cfg.judge)
    assert (options.strings, options.call_alone, options.check_types) == ("exact", False, True)
