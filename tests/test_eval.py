"""stage eval: predictions scored without a model (BFCL done-when checks), metrics, report, compare, sampling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from polaris_dpo import formats, messages, readers, report
from polaris_dpo.stages import eval as eval_stage

BFCL_WITH_ANSWERS = ["simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "live_multiple",
                     "live_parallel", "live_parallel_multiple"]


def bfcl_cfg(make_cfg, shared_data, category, tmp_path):
    answers = f"possible_answer/BFCL_v4_{category}.json" if "irrelevance" not in category else "null"
    return make_cfg("stage=eval", "data=bfcl", f"data.root={shared_data / 'bfcl'}", f"data.path=BFCL_v4_{category}.json",
                    f"data.answers={answers}", "format=polaris", run_dir=tmp_path / category)


def write_predictions(cfg, path, text_of):
    fmt = formats.from_config(cfg.format)
    conversations, _ = readers.read_all(cfg.data, path.parent)
    with open(path, "w") as handle:
        for conversation in conversations:
            for example in messages.examples(conversation):
                handle.write(json.dumps({"id": conversation["id"], "text": text_of(fmt, example)}) + "\n")
    return path


def reference_text(fmt, example):
    text = fmt.render_assistant(example["reference"])
    return text[:-len(fmt.eos_token)] if fmt.eos_token and text.endswith(fmt.eos_token) else text


@pytest.mark.parametrize("category", BFCL_WITH_ANSWERS)
def test_bfcl_reference_calls_score_100_percent_ok(make_cfg, shared_data, tmp_path, category):
    cfg = bfcl_cfg(make_cfg, shared_data, category, tmp_path)
    cfg.eval.predictions = str(write_predictions(cfg, tmp_path / f"{category}.jsonl", reference_text))
    result = eval_stage.run(cfg)
    metrics = result["metrics"]
    failures = [json.loads(line) for line in open(result["verdicts"]) if '"category": "ok"' not in line]
    assert failures == [], failures[:3]
    assert metrics["categories"]["ok"]["rate"] == 1.0 and metrics["n"] > 10
    assert metrics["call_accuracy"]["count"] == metrics["n"]


def test_data_bfcl_alone_scores_the_bundled_questions(make_cfg, tmp_path):
    cfg = make_cfg("stage=eval", "data=bfcl", "format=polaris", run_dir=tmp_path / "run")
    cfg.eval.predictions = str(write_predictions(cfg, tmp_path / "reference.jsonl", reference_text))
    metrics = eval_stage.run(cfg)["metrics"]
    assert metrics["n"] == 120 and metrics["categories"]["ok"]["rate"] == 1.0


@pytest.mark.parametrize("category", ["irrelevance", "live_irrelevance"])
def test_bfcl_irrelevance_no_call_is_ok_and_a_call_is_unwanted(make_cfg, shared_data, tmp_path, category):
    cfg = bfcl_cfg(make_cfg, shared_data, category, tmp_path)
    cfg.eval.predictions = str(write_predictions(cfg, tmp_path / "text.jsonl",
                                                 lambda fmt, example: "I cannot help with that."))
    assert eval_stage.run(cfg, output_dir=tmp_path / "text")["metrics"]["categories"]["ok"]["rate"] == 1.0

    def a_call(fmt, example):
        name = example["tools"][0]["function"]["name"] if example["tools"] else "search"  # a few rows have no tools
        return reference_text(fmt, {"reference": {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": name, "arguments": {}}}]}})

    cfg.eval.predictions = str(write_predictions(cfg, tmp_path / "call.jsonl", a_call))
    metrics = eval_stage.run(cfg, output_dir=tmp_path / "call")["metrics"]
    assert metrics["categories"]["unwanted_call"]["rate"] == 1.0


def test_predictions_path_metrics_report_and_compare(make_cfg, shared_data, tmp_path):
    cfg = bfcl_cfg(make_cfg, shared_data, "simple_python", tmp_path)
    good = write_predictions(cfg, tmp_path / "good.jsonl", reference_text)
    before_dir = tmp_path / "before"
    cfg.eval.predictions = str(good)
    eval_stage.run(cfg, output_dir=before_dir)

    # after: every third prediction answered in prose, a few with spacing-free text and broken calls
    rows = [json.loads(line) for line in open(good)]
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row["text"] = "The answer is 42."
        elif i % 7 == 0:
            row["text"] = "<|fn_start|>{broken<|fn_end|>"
    rows.append({"id": "no-such-id", "text": "x"})
    after = tmp_path / "after.jsonl"
    after.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg.eval.predictions = str(after)
    cfg.eval.compare_to = str(before_dir)
    result = eval_stage.run(cfg, output_dir=tmp_path / "after")
    metrics = result["metrics"]
    n = len(rows) - 1
    assert metrics["n"] == n and metrics["unmatched_predictions"] == 1
    counts = {c: e["count"] for c, e in metrics["categories"].items()}
    assert sum(counts.values()) == n
    assert counts["missed_call"] == len(range(0, n, 3))
    assert counts["malformed_call"] == sum(1 for i in range(n) if i % 3 and i % 7 == 0)
    missed = metrics["categories"]["missed_call"]
    assert missed["low"] < missed["rate"] < missed["high"]
    assert set(metrics["by_position"]) == {"first"}
    assert metrics["by_source"] and sum(e["n"] for e in metrics["by_source"].values()) == n
    verdict_rows = [json.loads(line) for line in open(result["verdicts"])]
    assert len(verdict_rows) == n and {"id", "category", "detail"} <= set(verdict_rows[0])
    text = open(result["report"]).read()
    assert "| category | before | after | change |" in text and "`missed_call`" in text
    assert "### `malformed_call`" in text
    assert open(result["chart"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_predictions_file_names_file_and_line(make_cfg, shared_data, tmp_path):
    cfg = bfcl_cfg(make_cfg, shared_data, "simple_python", tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "simple_python_0", "text": "x"}\n{"id": "simple_python_1"}\n')
    cfg.eval.predictions = str(bad)
    result = eval_stage.run(cfg)  # the bad line is quarantined, like a data file's, and the run goes on
    assert result["metrics"]["n"] == 1
    quarantine = tmp_path / "simple_python" / cfg.data.quarantine
    quarantined = [json.loads(line) for line in quarantine.read_text().splitlines()]
    bad_rows = [q for q in quarantined if q.get("file", "").endswith("bad.jsonl")]
    assert len(bad_rows) == 1 and bad_rows[0]["line"] == 2 and bad_rows[0]["field"] == "text"


def test_predictions_path_does_not_import_torch(shared_data, tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "irrelevance_0", "text": "No tool fits."}\n')
    code = (
        "import sys\n"
        "from polaris_dpo.compose import compose\n"
        "from polaris_dpo.stages import eval as e\n"
        f"cfg = compose(['stage=eval', 'data=bfcl', 'data.root={shared_data / 'bfcl'}',"
        f" 'data.path=BFCL_v4_irrelevance.json', 'data.answers=null', 'eval.predictions={preds}'], run_dir='{tmp_path}')\n"
        "r = e.run(cfg)\n"
        "assert r['metrics']['n'] == 1, r\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_wilson_interval():
    low, high = report.wilson_interval(0, 50)
    assert low == 0.0 and 0.05 < high < 0.09
    low, high = report.wilson_interval(25, 50)
    assert 0.36 < low < 0.37 and 0.63 < high < 0.64


def test_eval_samples_the_tiny_model_and_judges_every_sample(make_cfg, tmp_path):
    cfg = make_cfg("stage=eval", "model=tiny", "data=glaive", "data.limit=20", "eval.max_prompts=3",
                   "eval.samples_per_prompt=2", "eval.temperature=0.8", "eval.max_new_tokens=8", "eval.batch_size=4")
    result = eval_stage.run(cfg)
    metrics = result["metrics"]
    assert metrics["prompts"] == 3 and metrics["n"] == 6
    assert sum(e["count"] for e in metrics["categories"].values()) == 6
    assert metrics["settings"]["samples_per_prompt"] == 2


def _text_rows(n: int) -> list[dict]:
    return [{"id": f"t{i}", "sample": 0, "category": "ok", "detail": "", "source": "s", "position": "first",
             "expects_call": False, "text": "hello"} for i in range(n)]


def test_call_accuracy_without_call_prompts_is_undefined_not_zero():
    metrics = eval_stage.compute_metrics(_text_rows(3))
    metrics.update(settings={}, prompts=3)
    assert metrics["call_accuracy"]["rate"] is None and metrics["call_accuracy"]["n"] == 0
    assert metrics["text_accuracy"]["rate"] == 1.0
    flat = eval_stage.flat_metrics(metrics)
    assert "eval/call_accuracy" not in flat and None not in flat.values() and flat["eval/ok"] == 1.0
    text = eval_stage.render_report(metrics, [], before=metrics, worst=0)
    assert "Call accuracy (samples whose reference calls a function): -." in text and "Before: -." in text


def test_undefined_rate_renders_as_a_dash_in_tables():
    undefined = report.rate_or_undefined(0, 0)
    table = report.category_table({"before": {"ok": undefined}, "after": {"ok": report.rate_with_interval(1, 2)}})
    assert table.splitlines()[-1] == "| `ok` | - | 50.0% [9.5%, 90.5%] (1/2) | - |"
    assert report.format_rate(report.rate_with_interval(1, 4)) == "25.0% of 4"


@pytest.mark.parametrize(("override", "message"), [
    ("eval.samples_per_prompt=0", "eval.samples_per_prompt=0: at least 1"),
    ("eval.max_prompts=0", "eval.max_prompts=0"),
    ("eval.temperature=-1", "eval.temperature=-1"),
    ("eval.top_p=0", "eval.top_p=0"),
])
def test_value_ranges_are_checked_before_anything_is_read(make_cfg, tmp_path, override, message):
    cfg = make_cfg("stage=eval", override, "data.path=/nonexistent.jsonl")
    with pytest.raises(ValueError, match=message):
        eval_stage.run(cfg)
