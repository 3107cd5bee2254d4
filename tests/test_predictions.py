"""stage eval with eval.predictions: unusable rows quarantined like data rows, counts, other-syntax hints."""

from __future__ import annotations

import json
import logging

import pytest

from polaris_dpo import formats
from polaris_dpo.stages import eval as eval_stage

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
CITIES = ["Paris", "Lyon", "Nice", "Lille"]


def call(city: str) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]}


@pytest.fixture
def data_file(tmp_path):
    """Four conversations c0..c3 (one call each), and a line that is not JSON (a data quarantine row)."""
    rows = [json.dumps({"id": f"c{i}", "tools": TOOLS, "messages": [
        {"role": "user", "content": f"Weather in {city}?"}, call(city)]}) for i, city in enumerate(CITIES)]
    path = tmp_path / "conversations.jsonl"
    path.write_text("\n".join([*rows, "{broken"]) + "\n")
    return path


@pytest.fixture
def eval_cfg(make_cfg, data_file, tmp_path):
    def _make(predictions, *overrides):
        return make_cfg("stage=eval", "data=openai", f"data.path={data_file}",
                        f"eval.predictions={predictions}", *overrides, run_dir=tmp_path / "run")
    return _make


def written_call(fmt, city: str) -> str:
    text = fmt.render_assistant(call(city))
    return text[:-len(fmt.eos_token)] if fmt.eos_token and text.endswith(fmt.eos_token) else text


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_bad_prediction_rows_are_quarantined_and_counts_add_up(eval_cfg, tmp_path, caplog):
    polaris = formats.get("polaris")
    predictions = write_lines(tmp_path / "preds.jsonl", [
        {"id": "c0", "text": written_call(polaris, "Paris")},
        "not json at all",
        {"id": "c1"},
        {"text": "no id"},
        "",
        {"id": "c0#1", "text": "the same prompt again, by its example id"},
        {"id": "nope", "text": "x"},
        "[1, 2]",
        {"id": "c1", "text": written_call(polaris, "Lyon")},
    ])
    with caplog.at_level(logging.INFO, logger="polaris_dpo"):
        result = eval_stage.run(eval_cfg(predictions))
    metrics = result["metrics"]
    assert metrics["predictions"] == {"read": 8, "used": 2, "quarantined": 6}
    assert metrics["n"] == 2 and metrics["categories"]["ok"]["count"] == 2
    assert metrics["unmatched_predictions"] == 1 and metrics["examples_without_prediction"] == 2

    rows = [json.loads(line) for line in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    assert rows[0]["file"].endswith("conversations.jsonl")  # the data's own quarantine row stays first
    mine = rows[1:]
    assert {row["file"] for row in mine} == {str(predictions)}
    assert [(row["line"], row["field"]) for row in mine] == [
        (2, "row"), (3, "text"), (4, "id"), (6, "id"), (7, "id"), (8, "row")]
    assert "not valid JSON" in mine[0]["reason"] and "duplicate id 'c0#1'" in mine[3]["reason"]
    assert "line 1" in mine[3]["reason"] and "'nope' matches no example" in mine[4]["reason"]

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 of 4 example(s) have no prediction" in message for message in warnings), warnings
    assert any("read 8, used 2, quarantined 6" in message and "quarantine.jsonl" in message
               for message in warnings), warnings


def test_distinct_sample_values_are_several_samples_of_one_prompt(eval_cfg, tmp_path):
    polaris = formats.get("polaris")
    predictions = write_lines(tmp_path / "preds.jsonl", [
        {"id": f"c{i}", "sample": sample, "text": written_call(polaris, city) if sample else "No idea."}
        for i, city in enumerate(CITIES) for sample in (0, 1)])
    metrics = eval_stage.run(eval_cfg(predictions))["metrics"]
    assert metrics["predictions"] == {"read": 8, "used": 8, "quarantined": 0}
    assert metrics["n"] == 8 and metrics["categories"]["ok"]["count"] == 4


def test_every_line_bad_names_the_file_and_the_quarantine(eval_cfg, tmp_path):
    predictions = write_lines(tmp_path / "all_bad.jsonl", ["{oops", {"id": "c0", "text": 3}])
    with pytest.raises(ValueError, match="all_bad.jsonl") as raised:
        eval_stage.run(eval_cfg(predictions))
    message = str(raised.value)
    assert "line 1" in message and str(tmp_path / "run" / "quarantine.jsonl") in message
    assert len((tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()) == 1 + 2


def test_missing_predictions_file_names_the_key(eval_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"eval\.predictions: .*nowhere\.jsonl"):
        eval_stage.run(eval_cfg(tmp_path / "nowhere.jsonl"))


def test_calls_in_another_formats_syntax_get_a_hint(eval_cfg, tmp_path, caplog):
    hermes = formats.get("native", call_syntax="hermes")
    predictions = write_lines(tmp_path / "hermes.jsonl", [
        {"id": f"c{i}", "text": written_call(hermes, city)} for i, city in enumerate(CITIES)])
    with caplog.at_level(logging.WARNING, logger="polaris_dpo"):
        metrics = eval_stage.run(eval_cfg(predictions, "format=polaris"))["metrics"]
    assert metrics["categories"]["missed_call"]["count"] == 4
    hints = [r.getMessage() for r in caplog.records if "did you mean" in r.getMessage()]
    assert len(hints) == 1, hints
    assert "4 missed_call / malformed_call sample(s)" in hints[0]
    assert "format=native (hermes)" in hints[0] and hints[0].endswith("did you mean format=native?")


def test_no_hint_when_the_format_matches(eval_cfg, tmp_path, caplog):
    polaris = formats.get("polaris")
    predictions = write_lines(tmp_path / "polaris.jsonl", [
        {"id": "c0", "text": written_call(polaris, "Paris")}, {"id": "c1", "text": "I cannot tell."}])
    with caplog.at_level(logging.WARNING, logger="polaris_dpo"):
        metrics = eval_stage.run(eval_cfg(predictions, "format=polaris"))["metrics"]
    assert metrics["categories"]["missed_call"]["count"] == 1
    assert not [r for r in caplog.records if "did you mean" in r.getMessage()]
