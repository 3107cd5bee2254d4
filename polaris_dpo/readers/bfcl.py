"""Berkeley Function Calling Leaderboard questions, joined with their possible answers.

A question row: {"id", "question": [[messages]], "function": [definitions]}; its answer (matched by id
in `data.answers`, or `possible_answer/<same file name>` beside the questions):
{"id", "ground_truth": [{function_name: {argument: [acceptable values]}}]}. An acceptable value `""`
means the argument may be left out; a dict value lists acceptable values per key again.

The conversation ends with the reference call built from the first acceptable values, and
`acceptable` = [{"name", "arguments": {arg: [values]}}] for the judge. Irrelevance categories have no
answers file: the reference is a text answer (content None = any text, no call) and `acceptable` = [].
Relevance questions (any call is right) have no single reference and are quarantined with that reason.
Multi-turn categories need BFCL's executable environment and are quarantined too.
"""

from __future__ import annotations

import json
from pathlib import Path

from polaris_dpo import paths
from polaris_dpo.readers.base import DataFileError, RowError, require
from polaris_dpo.readers.base import Reader as BaseReader

OMITTED = ""  # BFCL's marker for "this argument may be left out"


class Reader(BaseReader):
    def __init__(self, data_cfg):
        super().__init__(data_cfg)
        self.answers: dict[str, list] | None = None
        self.answers_file: Path | None = None
        self.file: Path | None = None

    def start_file(self, file: Path | None) -> None:
        self.file = file
        self.answers, self.answers_file = None, self._answers_file(file)
        if self.answers_file is not None:
            self.answers = load_answers(self.answers_file)

    def _answers_file(self, file: Path | None) -> Path | None:
        configured = paths.resolve(self.cfg.get("answers"), self.cfg.get("root"))
        if configured is not None and configured.is_file():
            if paths.resolve(self.cfg.path, self.cfg.get("root")).is_dir():
                raise DataFileError(f"data.answers: {configured} is one file but data.path is a folder of "
                                    "categories; set data.answers to the possible_answer folder or null")
            return configured
        if configured is not None and not configured.is_dir():
            raise DataFileError(f"data.answers: {configured} does not exist")
        if file is None:
            return None
        candidate = (configured or file.parent / "possible_answer") / file.name
        return candidate if candidate.is_file() else None

    def convert(self, row: dict) -> dict:
        qid = str(require(row, "id"))
        question = require(row, "question", list)
        if len(question) != 1:
            raise RowError("question", f"multi-turn question ({len(question)} turns) needs BFCL's executable "
                                       "environment; not supported")
        messages = question[0]
        if not isinstance(messages, list) or not messages:
            raise RowError("question[0]", "must be a non-empty list of messages")
        conversation = {"id": qid, "messages": list(messages), "tools": require(row, "function", list)}
        if self.answers is None:
            if "irrelevance" in qid:
                conversation["messages"].append({"role": "assistant", "content": None})
                conversation["acceptable"] = []
                return conversation
            if "relevance" in qid:
                raise RowError("ground_truth", "relevance question: any call is right, there is no reference call")
            where = self.file or Path(self.cfg.path)
            raise DataFileError(f"{where}: row {qid}: no possible-answer file found (data.answers, or "
                                f"possible_answer/{where.name} beside it); only irrelevance categories come without one")
        if qid not in self.answers:
            raise RowError("ground_truth", f"no possible answer with id {qid!r} in {self.answers_file}")
        acceptable = acceptable_calls(self.answers[qid])
        conversation["messages"].append({"role": "assistant", "content": None,
                                         "tool_calls": [reference_call(c) for c in acceptable]})
        conversation["acceptable"] = acceptable
        return conversation


def load_answers(file: Path) -> dict[str, list]:
    answers = {}
    with file.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answers[str(row["id"])] = row["ground_truth"]
            except (json.JSONDecodeError, RecursionError, KeyError, TypeError) as err:
                raise DataFileError(f"{file}: line {number}: not a possible-answer row ({err})") from None
    return answers


def acceptable_calls(ground_truth) -> list[dict]:
    if not isinstance(ground_truth, list) or not ground_truth:
        raise RowError("ground_truth", "must be a non-empty list of calls")
    calls = []
    for i, call in enumerate(ground_truth):
        if not isinstance(call, dict) or len(call) != 1:
            raise RowError(f"ground_truth[{i}]", "must be {function_name: {argument: [values]}}")
        (name, arguments), = call.items()
        if not isinstance(arguments, dict):
            raise RowError(f"ground_truth[{i}].{name}", "arguments must be an object")
        for arg, values in arguments.items():
            if not isinstance(values, list) or not values:
                raise RowError(f"ground_truth[{i}].{name}.{arg}", "must be a non-empty list of acceptable values")
        calls.append({"name": name, "arguments": arguments})
    return calls


def reference_call(call: dict) -> dict:
    """The call made of the first acceptable value of each argument (arguments that may be left out are)."""
    return {"type": "function", "function": {"name": call["name"], "arguments": first_values(call["arguments"])}}


def first_values(acceptable: dict) -> dict:
    out = {}
    for arg, values in acceptable.items():
        chosen = next((v for v in values if v != OMITTED), OMITTED)
        if chosen == OMITTED:
            continue
        out[arg] = _first_value(chosen)
    return out


def _first_value(value):
    """A value from an answer key with its nested acceptable-value maps collapsed, inside lists too."""
    if _is_nested_acceptable(value):
        return first_values(value)
    if isinstance(value, list):
        return [_first_value(item) for item in value]
    return value


def _is_nested_acceptable(value) -> bool:
    # a dict argument's acceptable form maps each key to a list of acceptable values
    return isinstance(value, dict) and all(isinstance(v, list) for v in value.values())
