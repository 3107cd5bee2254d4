"""Readers on the real shared data (counts printed and adding up), hand-made bad rows, datasets folders, split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from polaris_dpo import messages as M
from polaris_dpo import paths, readers
from polaris_dpo.readers.base import DataFileError


def data_cfg(**keys):
    return OmegaConf.create({"quarantine": "quarantine.jsonl", **keys})


def read(run_dir: Path, **keys):
    reading = readers.read(data_cfg(**keys), run_dir)
    conversations = list(reading)
    counts = reading.counts
    print(reading.summary(), dict(reading.reasons))
    assert counts["read"] == counts["kept"] + counts["quarantined"]
    assert len(conversations) == counts["kept"]
    quarantined = [json.loads(line) for line in (run_dir / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == counts["quarantined"]
    for conversation in conversations:  # every kept conversation is canonical and stores/loads unchanged
        assert M.normalize_conversation(conversation) == conversation
        assert M.from_storage(json.loads(json.dumps(M.to_storage(conversation)))) == conversation
        assert list(M.examples(conversation))
    return conversations, counts, quarantined


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- the shared data

BFCL_WITH_ANSWERS = ["simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
                     "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]


@pytest.mark.parametrize("category", BFCL_WITH_ANSWERS)
def test_bfcl_categories_with_answers(shared_data, tmp_path, category):
    root = shared_data / "bfcl"
    conversations, counts, quarantined = read(
        tmp_path, reader="bfcl", root=str(root), path=f"BFCL_v4_{category}.json",
        answers=f"possible_answer/BFCL_v4_{category}.json")
    lines = sum(1 for line in (root / f"BFCL_v4_{category}.json").open() if line.strip())
    assert counts["read"] == lines and counts["kept"] >= lines - 2
    for q in quarantined:  # BFCL's live_simple has two answers with an argument that has no acceptable value
        assert q["reason"] == "must be a non-empty list of acceptable values"
    for conversation in conversations:
        reference = conversation["messages"][-1]
        assert reference["role"] == "assistant" and reference["tool_calls"]
        assert [c["function"]["name"] for c in reference["tool_calls"]] == [a["name"] for a in conversation["acceptable"]]
        assert all(t["function"]["parameters"].get("type", "object") == "object" for t in conversation["tools"])
    if category.startswith("parallel"):
        assert all(len(c["acceptable"]) >= 2 for c in conversations)


def test_bfcl_optional_and_nested_reference(shared_data, tmp_path):
    conversations, _, _ = read(tmp_path, reader="bfcl", root=str(shared_data / "bfcl"),
                               path="BFCL_v4_live_multiple.json", limit=1)
    (call,) = conversations[0]["messages"][-1]["tool_calls"]
    assert call["function"] == {"name": "ChaDri.change_drink", "arguments": {"drink_id": "latte", "new_preferences": {
        "size": "large", "milk_type": "coconut", "sweetness_level": "extra", "temperature": "hot",
        "special_instructions": "served boiling hot"}}}
    simple, _, _ = read(tmp_path, reader="bfcl", root=str(shared_data / "bfcl"), path="BFCL_v4_simple_python.json",
                        limit=1)
    # "unit": ["units", ""] -> the reference uses the first value; "" stays in acceptable (may be omitted)
    assert simple[0]["messages"][-1]["tool_calls"][0]["function"]["arguments"] == {"base": 10, "height": 5, "unit": "units"}
    assert simple[0]["acceptable"][0]["arguments"]["unit"] == ["units", ""]


@pytest.mark.parametrize("category", ["irrelevance", "live_irrelevance", "live_relevance"])
def test_bfcl_categories_without_answers(shared_data, tmp_path, category):
    conversations, counts, quarantined = read(tmp_path, reader="bfcl", root=str(shared_data / "bfcl"),
                                              path=f"BFCL_v4_{category}.json")
    if category == "live_relevance":  # any call is right: no reference to hold a model to
        assert counts["kept"] == 0 and counts["quarantined"] == counts["read"] > 0
        assert {q["field"] for q in quarantined} == {"ground_truth"}
        return
    assert counts["quarantined"] == 0 and counts["kept"] > 200
    for conversation in conversations:
        assert conversation["messages"][-1] == {"role": "assistant", "content": None}
        assert conversation["acceptable"] == []
        (point,) = M.examples(conversation)
        assert point["reference"]["content"] is None and "tool_calls" not in point["reference"]


def test_bfcl_whole_folder(shared_data, tmp_path):
    _, counts, _ = read(tmp_path, reader="bfcl", path=str(shared_data / "bfcl"))
    assert counts["read"] == 3641


def test_when2call_all_rows(shared_data, tmp_path):
    conversations, counts, _ = read(tmp_path, reader="when2call", root=str(shared_data / "when2call"),
                                    path="when2call_test_llm_judge.jsonl")
    assert counts == {"read": 300, "kept": 300, "quarantined": 0}
    for conversation in conversations:
        prefs = conversation["preferences"]
        assert len(prefs["rejected"]) == 3 and prefs["chosen"] not in prefs["rejected"]
        assert conversation["messages"][-1] == prefs["chosen"] == prefs["candidates"][prefs["correct"]]
        assert "tool_calls" in prefs["candidates"]["tool_call"]
    corrects = {c["preferences"]["correct"] for c in conversations}
    assert corrects == {"tool_call", "request_for_info", "cannot_answer"}


def test_glaive_all_rows(shared_data, tmp_path):
    conversations, counts, _ = read(tmp_path, reader="sharegpt", root=str(shared_data / "glaive"),
                                    path="glaive_toolcall_en_demo.json")
    assert counts == {"read": 300, "kept": 300, "quarantined": 0}
    calls = [m for c in conversations for m in c["messages"] if m.get("tool_calls")]
    results = [m for c in conversations for m in c["messages"] if m["role"] == "tool"]
    assert len(calls) == len(results) == 211
    positions = {p["position"] for c in conversations for p in M.examples(c)}
    assert positions == {"first", "middle", "last"}


def test_functionary_through_openai_reader(shared_data, tmp_path):
    root = shared_data / "functionary"
    conversations, counts, _ = read(tmp_path, reader="openai", root=str(root), path="small_tests_2023-11.jsonl")
    assert counts == {"read": 20, "kept": 20, "quarantined": 0}
    assert sum(1 for c in conversations for m in c["messages"] if m.get("tool_calls")) == 13
    v1, counts, _ = read(tmp_path, reader="openai", root=str(root), path="test_case_v1.json")
    assert counts["kept"] == 1 and v1[0]["tools"][0]["function"]["name"] == "get_car_price"
    assert [m["role"] for m in v1[0]["messages"]].count("tool") == 2
    # test_case.json / _v2: functionary's code-interpreter call carries raw Python as `arguments`, not JSON:
    # it is kept canonically as {"code": ...}, which the functionary format renders back as raw code
    for name in ("test_case.json", "test_case_v2.json"):
        conversations, counts, _ = read(tmp_path, reader="openai", root=str(root), path=name)
        assert counts == {"read": 1, "kept": 1, "quarantined": 0}
        call = conversations[0]["messages"][12]["tool_calls"][0]["function"]
        assert call["name"] == "python" and set(call["arguments"]) == {"code"}
        assert "import" in call["arguments"]["code"] or "\n" in call["arguments"]["code"]


def polaris_readme_chat(shared_data) -> str:
    text = (shared_data / "polaris" / "small_README_HEAD.md").read_text()
    block = text.split("## Example Conversation", 1)[1].split("```\n", 1)[1].split("\n```", 1)[0]
    return block.replace("<|im_end|>\n", "<|im_end|>")  # the README adds those newlines for reading only


def test_polaris_readme_example(shared_data, tmp_path):
    chat = polaris_readme_chat(shared_data)
    write_jsonl(tmp_path / "polaris.jsonl", [{"text": chat}])
    (conversation,), counts, _ = read(tmp_path, reader="polaris", path=str(tmp_path / "polaris.jsonl"))
    assert [m["role"] for m in conversation["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert conversation["messages"][0]["content"] == "You are a helpful assistant."
    assert conversation["messages"][2]["tool_calls"][0]["function"] == {"name": "generate_password",
                                                                        "arguments": {"length": 42}}
    assert conversation["messages"][3]["name"] == "generate_password"
    assert conversation["tools"][0]["function"]["name"] == "generate_password"


def test_polaris_rows_fn_role_and_sharegpt_shape(tmp_path):
    system = ('## Configuration\n\nFunctions: enabled\n\n## Available Functions\n\n'
              '{"name": "get_rss_feed", "parameters": {"type": "object", "properties": {"url": {"type": "string"}}}}\n'
              '\n---\n\nYou are a helpful assistant.')
    rows = [
        {"conversations": [{"from": "system", "value": system}, {"from": "human", "value": "news?"},
                           {"from": "gpt", "value": '<|fn_start|>{"name": "get_rss_feed", "arguments": {"url": "x"}}<|fn_end|>'},
                           {"from": "function_response", "value": "[]"}, {"from": "gpt", "value": "Nothing new."}],
         "functions_enabled": True, "function_called": True},
        {"messages": [{"role": "system", "content": "## Configuration\n\nFunctions: disabled\n\n---\n\nBe brief."},
                      {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]},
        {"messages": [{"role": "user", "content": "q"},
                      {"role": "assistant", "content": '<|fn_start|>{"name": "f", "arguments": "{\\"a\\": 1}"}<|fn_end|>'},
                      {"role": "fn", "content": "1"}, {"role": "assistant", "content": "one"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<|fn_start|>{\"name\": \"f\""}]},
    ]
    conversations, counts, quarantined = read(tmp_path, reader="polaris", path=str(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert counts == {"read": 4, "kept": 3, "quarantined": 1}
    first, second, third = conversations
    assert first["tools"][0]["function"]["name"] == "get_rss_feed"
    assert first["messages"][3] == {"role": "tool", "content": "[]", "name": "get_rss_feed"}
    assert second["tools"] == [] and second["messages"][0] == {"role": "system", "content": "Be brief."}
    assert third["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert quarantined[0]["row"] == 3 and "call 1: invalid JSON" in quarantined[0]["reason"]
    assert quarantined[0]["field"] == "messages[1].content"


def test_polaris_rows_read_what_the_polaris_format_writes(tmp_path):
    system = ('## Configuration\r\n\r\nFunctions: enabled\r\n\r\n## Available Functions\r\n\r\n'
              '{"name": "note", "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}\r\n'
              '\r\n---\r\n\r\nYou are a helpful assistant.')  # CRLF line endings
    call = '<|fn_start|>{"name": "note", "arguments": {"text": "ends with <|fn_end|> and <|fn_start|>"}}<|fn_end|>'
    rows = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": call}]},
            {"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": '<|fn_start|>{"name": "f", "arguments": {"x": NaN}}<|fn_end|>'}]}]
    conversations, counts, quarantined = read(tmp_path, reader="polaris", path=str(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert counts == {"read": 2, "kept": 1, "quarantined": 1}
    (conversation,) = conversations
    assert conversation["tools"][0]["function"]["name"] == "note"
    assert conversation["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    arguments = conversation["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert arguments == {"text": "ends with <|fn_end|> and <|fn_start|>"}
    assert quarantined[0]["field"] == "messages[1].content"


def test_sharegpt_observation_given_as_a_json_object_is_kept_as_its_text(tmp_path):
    row = {"conversations": [{"from": "human", "value": "q"},
                             {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
                             {"from": "observation", "value": {"temperature": 21}},
                             {"from": "gpt", "value": "21 degrees."}],
           "tools": '[{"name": "f", "parameters": {"type": "object", "properties": {}}}]'}
    conversations, counts, _ = read(tmp_path, reader="sharegpt", path=str(write_jsonl(tmp_path / "s.jsonl", [row])))
    assert counts["kept"] == 1
    assert json.loads(conversations[0]["messages"][2]["content"]) == {"temperature": 21}


# ---------------------------------------------------------------- bad rows, bad files

def test_bad_rows_go_to_quarantine_with_reasons(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    rows = [
        good,
        "{not json",
        {"tools": []},
        {"messages": [{"role": "user", "content": "q"}]},
        {"messages": [{"role": "user", "content": "q"},
                      {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}]},
        {"messages": [{"role": "wizard", "content": "q"}, {"role": "assistant", "content": "a"}]},
        [1, 2],
        {**good, "tools": [{"name": "f", "parameters": {"type": "Date"}}]},
        good,
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    conversations, counts, quarantined = read(tmp_path, reader="openai", path=str(path))
    assert counts == {"read": 9, "kept": 2, "quarantined": 7}
    by_row = {q["row"]: q for q in quarantined}
    assert set(by_row) == {1, 2, 3, 4, 5, 6, 7}
    assert all(q["file"] == str(path) for q in quarantined)
    assert by_row[1]["field"] == "row" and "line 2 is not valid JSON" in by_row[1]["reason"]
    assert by_row[2] == {**by_row[2], "field": "messages", "reason": "missing required field"}
    assert by_row[3]["field"] == "messages" and "no assistant turn" in by_row[3]["reason"]
    assert by_row[4]["field"] == "messages[1].tool_calls[0].function.arguments"
    assert by_row[5]["field"] == "messages[0].role"
    assert "not an object" in by_row[6]["reason"]
    assert by_row[7]["field"] == "tools[0].parameters.type"
    assert [c["row"] for c in conversations] == [0, 8] and conversations[1]["id"] == "chat:8"


def test_when2call_bad_rows(tmp_path):
    ok = {"uuid": "u", "question": "q", "correct_answer": "direct", "tools": [],
          "answers": {"direct": "d", "tool_call": '{"name": "f", "arguments": {}}', "request_for_info": "r",
                      "cannot_answer": "c"}}
    rows = [ok, {**ok, "correct_answer": "maybe"}, {**ok, "answers": {**ok["answers"], "tool_call": "f("}},
            {k: v for k, v in ok.items() if k != "question"}]
    _, counts, quarantined = read(tmp_path, reader="when2call", path=str(write_jsonl(tmp_path / "w.jsonl", rows)))
    assert counts == {"read": 4, "kept": 1, "quarantined": 3}
    assert [q["field"] for q in quarantined] == ["correct_answer", "answers.tool_call", "question"]


def test_sharegpt_parallel_calls_and_text_before_call(tmp_path):
    row = {"conversations": [
        {"from": "human", "value": "two"}, {"from": "gpt", "value": "Let me check."},
        {"from": "function_call", "value": '[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": "{}"}]'},
        {"from": "observation", "value": "1"}, {"from": "observation", "value": "2"}, {"from": "gpt", "value": "ok"}],
        "tools": '[{"name": "f"}, {"name": "g"}]', "system": "sys"}
    (conversation,), _, _ = read(tmp_path, reader="sharegpt", path=str(write_jsonl(tmp_path / "s.jsonl", [row])))
    roles = [m["role"] for m in conversation["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant"]
    # a bad call is named by the row's own field, not by its place among the converted messages
    bad = {**row, "conversations": [*row["conversations"][:2], {"from": "function_call", "value": '{"name": "f"}'},
                                    {"from": "function_call", "value": '{"name": "g", "arguments": "{oops"}'},
                                    *row["conversations"][3:]]}
    _, _, quarantined = read(tmp_path, reader="sharegpt", path=str(write_jsonl(tmp_path / "b.jsonl", [bad])))
    assert [q["field"] for q in quarantined] == ["conversations[3].value.arguments"]
    assert conversation["messages"][2]["content"] == "Let me check."
    assert [m["name"] for m in conversation["messages"][3:5]] == ["f", "g"]


def test_awkward_rows_are_quarantined_and_the_good_ones_kept(tmp_path):
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}]}
    rows = [
        '{"conversations": [',  # a broken first line of a .jsonl file is one bad row, not a bad file
        good,
        {"conversations": [{"from": ["human"], "value": "x"}, {"from": "gpt", "value": "ok"}]},
        {"conversations": [{"role": {"name": "user"}, "content": "x"}, {"from": "gpt", "value": "ok"}]},
        '{"conversations": ' + "[" * 5000 + "]" * 5000 + "}",
        {"conversations": [{"from": "human", "value": "x"},
                           {"from": "function_call", "value": '{"name": "f", "arguments": ' + "[" * 5000 + "}"}]},
        '{"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": '
        '{"name": "f", "arguments": {"a": NaN, "b": 1e999}}}, {"from": "gpt", "value": "ok"}]}',
        good,
    ]
    path = tmp_path / "awkward.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + write_jsonl(path, rows).read_bytes())  # with a UTF-8 byte order mark
    conversations, counts, quarantined = read(tmp_path, reader="sharegpt", path=str(path))
    assert counts == {"read": 8, "kept": 2, "quarantined": 6}
    by_row = {q["row"]: q for q in quarantined}
    assert "line 1 is not valid JSON" in by_row[0]["reason"]
    assert by_row[2]["field"] == "conversations[0].from" and "unknown speaker ['human']" in by_row[2]["reason"]
    assert by_row[3]["field"] == "conversations[0].role"
    assert "nested too deeply" in by_row[4]["reason"]
    assert by_row[5]["field"] == "conversations[1].value" and "nested too deeply" in by_row[5]["reason"]
    assert by_row[6]["field"] == "conversations[1].value.arguments" and "NaN" in by_row[6]["reason"]
    assert [c["row"] for c in conversations] == [1, 7]


def test_duplicate_ids_are_quarantined_naming_the_first(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "chat.jsonl", [{**row, "id": "a"}, {**row, "id": "b"}, {**row, "id": "a"}])
    (folder / "chat.json").write_text(json.dumps([row]))  # its row 0 gets the default id chat.json:0 ...
    write_jsonl(folder / "more.jsonl", [{**row, "id": "chat.json:0"}])  # ... which this row also claims
    conversations, counts, quarantined = read(tmp_path, reader="openai", path=str(folder))
    assert counts == {"read": 5, "kept": 3, "quarantined": 2}
    assert sorted(c["id"] for c in conversations) == ["a", "b", "chat.json:0"]
    assert {q["field"] for q in quarantined} == {"id"}
    reasons = sorted(q["reason"] for q in quarantined)
    assert reasons[0].startswith("duplicate id 'a': already read at ") and reasons[0].endswith("chat.jsonl row 0")
    assert reasons[1].startswith("duplicate id 'chat.json:0': already read at ")


def test_files_of_one_stem_without_ids_do_not_share_default_ids(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [row, row])
    (folder / "train.json").write_text(json.dumps([row]))
    write_jsonl(folder / "other.JSONL", [row])  # the suffix in any case
    conversations, counts, _ = read(tmp_path, reader="openai", path=str(folder))
    assert counts == {"read": 4, "kept": 4, "quarantined": 0}
    assert sorted(c["id"] for c in conversations) == ["other:0", "train.json:0", "train.jsonl:0", "train.jsonl:1"]


def test_a_number_beyond_pythons_digit_limit_is_one_quarantined_row(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n" + '{"messages": [], "n": ' + "1" * 5000 + "}\n", encoding="utf-8")
    conversations, counts, quarantined = read(tmp_path, reader="openai", path=str(path))
    assert counts == {"read": 2, "kept": 1, "quarantined": 1}
    assert quarantined[0]["row"] == 1 and "line 2" in quarantined[0]["reason"]
    call = {"name": "f", "arguments": '{"n": ' + "1" * 5000 + "}"}
    write_jsonl(path, [{"messages": [{"role": "user", "content": "q"},
                                     {"role": "assistant", "content": None, "tool_calls": [call]}]}])
    _, counts, quarantined = read(tmp_path, reader="openai", path=str(path))
    assert counts["quarantined"] == 1 and quarantined[0]["field"] == "messages[1].tool_calls[0].arguments"


def test_a_lone_surrogate_is_a_quarantined_row_and_the_quarantine_file_keeps_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = ['{"messages": [{"role": "user", "content": "hi \\ud83d"}, {"role": "assistant", "content": "a"}]}',
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], '
            '"tools": [{"name": "f", "parameters": {"type": "object", "properties": {"x\\ud800": {"type": "bogus"}}}}]}',
            '{"messages": [{"role": "user", "content": "fine \\ud83d\\ude00"}, {"role": "assistant", "content": "a"}]}']
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    conversations, counts, quarantined = read(tmp_path, reader="openai", path=str(path))
    assert counts == {"read": 3, "kept": 1, "quarantined": 2}
    assert conversations[0]["messages"][0]["content"] == "fine \U0001F600"
    assert quarantined[0]["field"] == "messages[0].content" and "surrogate" in quarantined[0]["reason"]
    assert quarantined[1]["field"].startswith("tools[0].")


def test_json_file_with_byte_order_mark(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("\ufeff" + json.dumps([{"messages": [{"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": "a"}]}]), encoding="utf-8")
    conversations, counts, _ = read(tmp_path, reader="openai", path=str(path))
    assert counts["kept"] == 1 and conversations[0]["messages"][0]["content"] == "q"


def test_unreadable_file_and_missing_path_fail_naming_them(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"messages": [}')
    with pytest.raises(DataFileError, match=r"broken\.json: neither JSON nor JSONL .*line 1"):
        list(readers.read(data_cfg(reader="openai", path=str(bad)), tmp_path))
    assert not (tmp_path / "quarantine.jsonl").exists()
    with pytest.raises(DataFileError, match="data.path: .*nowhere.jsonl does not exist"):
        list(readers.read(data_cfg(reader="openai", path=str(tmp_path / "nowhere.jsonl")), tmp_path))
    with pytest.raises(ValueError, match="data.reader: 'csv'"):
        readers.read(data_cfg(reader="csv", path=str(bad)), tmp_path)


def test_bfcl_missing_answers_file_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "BFCL_v4_simple.json", [
        {"id": "simple_0", "question": [[{"role": "user", "content": "q"}]], "function": [{"name": "f"}]}])
    with pytest.raises(DataFileError, match="no possible-answer file"):
        list(readers.read(data_cfg(reader="bfcl", path=str(path)), tmp_path))


# ---------------------------------------------------------------- datasets folders, limit, split

def test_saved_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": json.dumps({"i": i} if i % 2 else {"j": [i]})}}]}],
        "tools": json.dumps([{"name": "f"}])} for i in range(4)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2])}).save_to_disk(str(tmp_path / "dd"))
    conversations, counts, _ = read(tmp_path, reader="openai", path=str(tmp_path / "ds"))
    assert counts["kept"] == 4 and conversations[3]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"i": 3}
    assert conversations[0]["source"] == "ds" and conversations[0]["id"] == "ds:0"
    _, counts, _ = read(tmp_path, reader="openai", path=str(tmp_path / "dd"), hub_split="train")
    assert counts["kept"] == 2


def test_limit_and_streaming(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [
        {"messages": [{"role": "user", "content": str(i)}, {"role": "assistant", "content": "a"}]} for i in range(50)])
    _, counts, _ = read(tmp_path, reader="openai", path=str(path), limit=7)
    assert counts == {"read": 7, "kept": 7, "quarantined": 0}
    first = next(iter(readers.read(data_cfg(reader="openai", path=str(path)), tmp_path)))
    assert first["messages"][0]["content"] == "0"


def test_split_by_conversation_id():
    conversations = [{"id": f"c{i}"} for i in range(2000)]
    train, held_out = readers.split(conversations, 0.2, seed=0)
    assert len(train) + len(held_out) == 2000 and 300 < len(held_out) < 500
    assert not {c["id"] for c in train} & {c["id"] for c in held_out}
    again, _ = readers.split(reversed(conversations), 0.2, seed=0)
    assert {c["id"] for c in again} == {c["id"] for c in train}
    other, _ = readers.split(conversations, 0.2, seed=1)
    assert {c["id"] for c in other} != {c["id"] for c in train}
    assert readers.split(conversations, 0.0, 0)[1] == [] and readers.split(conversations, 1.0, 0)[0] == []
    with pytest.raises(ValueError, match="eval_fraction"):
        readers.split(conversations, 1.5, 0)


def test_conf_data_files_compose(make_cfg, shared_data, tmp_path):
    when2call = shared_data / "when2call" / "when2call_test_llm_judge.jsonl"
    for overrides, expect in ((["data=glaive"], 300), (["data=when2call", f"data.path={when2call}"], 300)):
        cfg = make_cfg(*overrides)
        _, counts = readers.read_all(cfg.data, tmp_path)
        assert counts["read"] == expect, overrides


# ---------------------------------------------------------------- conf/data on the bundled data, or the user's

def test_data_bfcl_reads_the_bundled_questions(make_cfg, tmp_path):
    conversations, counts = readers.read_all(make_cfg("data=bfcl").data, tmp_path)
    assert counts == {"read": 120, "kept": 120, "quarantined": 0}
    assert {c["source"] for c in conversations} == {"BFCL_v4_simple_python", "BFCL_v4_live_simple",
                                                    "BFCL_v4_irrelevance"}


def test_bfcl_answers_follow_data_path(make_cfg, tmp_path):
    bundled = Path(paths.asset("bfcl"))
    questions = [json.loads(line) for line in (bundled / "BFCL_v4_simple_python.json").open()][:3]
    answers = [json.loads(line) for line in (bundled / "possible_answer" / "BFCL_v4_simple_python.json").open()][:3]
    for row in questions + answers:  # ids no other BFCL file has
        row["id"] = f"mine_{row['id']}"
    (tmp_path / "possible_answer").mkdir()
    write_jsonl(tmp_path / "possible_answer" / "BFCL_v4_mine.json", answers)
    cfg = make_cfg("data=bfcl", f"data.path={write_jsonl(tmp_path / 'BFCL_v4_mine.json', questions)}")
    conversations, counts = readers.read_all(cfg.data, tmp_path / "run")
    assert counts == {"read": 3, "kept": 3, "quarantined": 0}
    assert [c["acceptable"][0]["name"] for c in conversations] == [next(iter(a["ground_truth"][0])) for a in answers]


def test_bfcl_irrelevance_needs_no_answers(make_cfg, tmp_path):
    path = tmp_path / "BFCL_v4_irrelevance.json"
    shutil.copyfile(Path(paths.asset("bfcl")) / path.name, path)
    conversations, counts = readers.read_all(make_cfg("data=bfcl", f"data.path={path}").data, tmp_path / "run")
    assert counts == {"read": 40, "kept": 40, "quarantined": 0}
    assert all(c["acceptable"] == [] for c in conversations)


def test_data_when2call_asks_for_data_path(make_cfg, tmp_path):
    with pytest.raises(DataFileError, match="data.path .*must be set: a When2Call JSONL file"):
        readers.read_all(make_cfg("data=when2call").data, tmp_path)
