"""Spacing rules, second round: errors the first rules missed, code and math they edited, and every
assistant text in ../shared/data (glaive, When2Call, functionary, Polaris) as the no-false-alarm check."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polaris_dpo.typography import find_issues, fix_spacing, protected_spans


@pytest.mark.parametrize("text, fixed", [
    # a sign or a currency after the colon
    ("The total is:$45.50.", "The total is: $45.50."),
    ("Your payment is:€30.", "Your payment is: €30."),
    ("Temperature:-5 degrees.", "Temperature: -5 degrees."),
    # a number, a dot, a capitalised word: no decimal goes on like that
    ("The result was 42.Then it stopped.", "The result was 42. Then it stopped."),
    ("It costs $5.99.Next, pay.", "It costs $5.99. Next, pay."),
    ("Python 3.10.Next comes 3.11.", "Python 3.10. Next comes 3.11."),
    # sentence-ending words that are no abbreviation
    ("The answer is no.The store is closed.", "The answer is no. The store is closed."),
    ("Go down the first st.The shop is there.", "Go down the first st. The shop is there."),
    # Markdown bold around the colon: the space goes after a closing `**`, before an opening one
    ("**Note:**This matters.", "**Note:** This matters."),
    ("Answer:**42**", "Answer: **42**"),
    ("**Note**:This matters.", "**Note**: This matters."),
    ("**A** and Answer:**42**", "**A** and Answer: **42**"),
    # quotes after the colon, letters outside ASCII
    ("Answer:'yes'", "Answer: 'yes'"),
    ("Answer:«oui»", "Answer: «oui»"),
    ("Tōkyō,Japan", "Tōkyō, Japan"),
    ("It is in Zürich,Switzerland.", "It is in Zürich, Switzerland."),
    ("It was a café.The end.", "It was a café. The end."),
    # double spaces right beside code, a URL or an e-mail address
    ("see  `x` now", "see `x` now"),
    ("see `x`  now", "see `x` now"),
    ("go to  https://a.com now", "go to https://a.com now"),
    ("mail  a@b.com now", "mail a@b.com now"),
])
def test_missed_errors_now_fire_and_fix(text, fixed):
    assert find_issues(text), text
    assert fix_spacing(text) == fixed
    assert find_issues(fixed) == []


@pytest.mark.parametrize("text", [
    # code in prose, unquoted
    "call get_weather(city='Paris',unit='C') now",
    "Use print(a,b) to print both.",
    "Then func(x,y) is called.",
    "Set x=1,y=2 in the config.",
    "The set {a,b} has two elements.",
    "Bind as dc=example,dc=com first.",
    # addresses and math
    "IPv6 is 2001:db8::1 or fe80::1ff:fe23:4567:890a.",
    "The MAC is 00:1A:2B:3C:4D:5E here.",
    "LaTeX $a:b$ and $x ,y$ and \\frac{a}{b}.",
    "Inline \\(a:b ,c\\) and display \\[x ,y\\] and $$p:q$$.",
    # money is not math: these dollars open no span
    "It costs $5 and $6.",
    # a spaced ellipsis
    "wait . . . and then",
    # abbreviations that stay: No. before a number, titles as written
    "See No.5 and no. 7 please.",
    "Mr. Smith met Dr. Who at St. Louis.",
    "Look at Fig.3 first.",
    # versions and names with digits that go on with a capital, qualifiers
    "Use v1.2.Final or 5.4.32.Final.",
    "Open photo1.Jpg now.",
    # scripts without spaces between words
    "Hello,世界 and 你好,世界",
    # bold written right
    "**Note:** This matters. **Note**: this too. Answer: **42**",
])
def test_code_math_and_conventions_are_left_alone(text):
    assert find_issues(text) == [], find_issues(text)
    assert fix_spacing(text) == text


def test_no_number_abbreviation_only_before_a_number():
    assert find_issues("The answer is no.The store") and find_issues("It was yes.The store")
    assert not find_issues("Item No.5 is here") and not find_issues("Item no. 5 is here")


def test_latex_and_calls_are_protected_spans():
    text = "Compute $a:b$ with get(x,y) at fe80::1ff:fe23:4567:890a."
    covered = ["".join(text[a:b]) for a, b in protected_spans(text)]
    assert "$a:b$" in covered and "get(x,y)" in covered and "fe80::1ff:fe23:4567:890a" in covered


PIECES = st.sampled_from([
    "word", "Answer", "The", "Then", "no", "No", "St", "42", "5.99", "$", "€", "-5", "**", ":", ",", ".", ";", "!",
    " ", "  ", "\n", "`x`", "https://a.b/c", "a@b.co", "print(a,b)", "x=1,y=2", "{a,b}", "fe80::1", "$a:b$",
    "\\(x ,y\\)", ". . .", "'q'", "«q»", "Tōkyō", "世界", "v1.2", "Final", "e.g.",
])
TEXTS = st.lists(PIECES, max_size=16).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_fix_spacing_changes_only_spaces_and_is_idempotent(text):
    fixed = fix_spacing(text)
    assert fixed.replace(" ", "") == text.replace(" ", "")
    assert fix_spacing(fixed) == fixed and find_issues(fixed) == []
    if not find_issues(text):
        assert fixed == text


def shared_assistant_texts(shared_data) -> dict[str, list[str]]:
    """Assistant prose of every source in ../shared/data that has some, by source."""
    rows = json.loads((shared_data / "glaive" / "glaive_toolcall_en_demo.json").read_text())
    glaive = [turn["value"] for row in rows for turn in row["conversations"] if turn["from"] == "gpt"]
    when2call = [answer for line in (shared_data / "when2call" / "when2call_test_llm_judge.jsonl").open()
                 for kind, answer in json.loads(line)["answers"].items() if kind != "tool_call"]
    functionary = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("role") == "assistant" and isinstance(node.get("content"), str):
                functionary.append(node["content"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted((shared_data / "functionary").glob("test_case*.json")):
        walk(json.loads(path.read_text()))
    for line in (shared_data / "functionary" / "small_tests_2023-11.jsonl").open():
        walk(json.loads(line))
    polaris = [path.read_text() for path in sorted((shared_data / "polaris").glob("*.md"))]
    return {"glaive": glaive, "when2call": when2call, "functionary": functionary, "polaris": polaris}


def test_no_false_alarm_on_any_shared_assistant_text(shared_data):
    sources = shared_assistant_texts(shared_data)
    assert len(sources["glaive"]) > 700 and len(sources["when2call"]) >= 900 and sources["functionary"]
    for source, texts in sources.items():
        firing = {i: find_issues(text) for i, text in enumerate(texts) if find_issues(text)}
        assert firing == {}, source
        assert all(fix_spacing(text) == text for text in texts), source
