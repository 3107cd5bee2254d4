"""How far each format's response template reads what its own parse reads, on renders of real turns.

    turns = bundled_turns() + shared_turns(shared_data)   # (label, prompt messages, tools, assistant message)
    report = agreement(formats.get("polaris"), turns)
    report.rate, report.agreed, report.total, report.disagreements

Each assistant turn is rendered (render_assistant) and read twice: by fmt.parse, and by transformers'
parse_response with the format's response template and the rendered prompt as prefix, as
`transformers serve` calls it. A turn counts when it is well formed (parse finds no error) and not
empty. The two readings are compared as an OpenAI client receives them: the content (None and ""
alike) and each call's name and arguments, arguments given as a JSON string decoded (serve sends
arguments as a JSON string either way).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from polaris_dpo import paths

VARIANTS = [  # (label, format name, options): every format and call syntax the project ships
    ("polaris", "polaris", {}),
    ("polaris arguments_as_string", "polaris", {"fn_role": "tool", "arguments_as_string": True}),
    ("functionary v2", "functionary", {"version": "v2"}),
    ("functionary v1", "functionary", {"version": "v1"}),
    ("chatml_tools", "chatml_tools", {}),
    ("openchat", "openchat", {}),
    ("vicuna", "vicuna", {}),
    ("native hermes", "native", {"call_syntax": "hermes"}),
    ("native mistral", "native", {"call_syntax": "mistral"}),
]
SHARED_BFCL_LIMIT = 60  # questions read per shared BFCL category


@dataclass
class Report:
    agreed: int = 0
    total: int = 0
    skipped: int = 0  # turns not well formed in this format, or empty
    disagreements: list[dict] = field(default_factory=list)  # {"label", "text", "parse", "template"}

    @property
    def rate(self) -> float:
        return self.agreed / self.total if self.total else 1.0


def client_view(message: dict) -> tuple:
    """(content, [(name, arguments)]) of a parsed message, as an OpenAI client receives it."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        calls.append((function.get("name"), json.dumps(arguments, sort_keys=True, ensure_ascii=False)))
    return (message.get("content") or None, calls)


def template_reading(fmt, text: str, prefix: str) -> dict:
    """parse_response's message for `text`, or {"error": ...} where the template cannot read it."""
    from transformers.utils.chat_parsing import parse_response

    try:
        return parse_response(text, fmt.response_template, prefix=prefix)
    except (ValueError, KeyError) as err:
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}


def agreement(fmt, turns) -> Report:
    report = Report()
    for label, prompt, tools, message in turns:
        if not message.get("content") and not message.get("tool_calls") and not message.get("function_call"):
            report.skipped += 1
            continue
        try:
            text = fmt.render_assistant(message)
        except (ValueError, KeyError, TypeError):
            report.skipped += 1
            continue
        parsed = fmt.parse(text)
        if "parse_error" in parsed:
            report.skipped += 1
            continue
        read = template_reading(fmt, text, fmt.render(prompt, tools or None, add_generation_prompt=True))
        report.total += 1
        if "error" not in read and client_view(read) == client_view(parsed):
            report.agreed += 1
        else:
            report.disagreements.append({"label": label, "text": text, "parse": client_view(parsed),
                                         "template": read.get("error") or client_view(read)})
    return report


# ---------------------------------------------------------------- real turns


def conversation_turns(label: str, messages: list[dict], tools) -> list[tuple]:
    """One (label, prompt, tools, message) per assistant message of a conversation."""
    return [(f"{label}@{i}", messages[:i], tools, m) for i, m in enumerate(messages) if m["role"] == "assistant"]


def read_turns(source: dict, run_dir: Path) -> list[tuple]:
    """The turns of every conversation a reader (a `data:` section as a dict) gives."""
    from omegaconf import OmegaConf

    from polaris_dpo import readers
    from polaris_dpo.config import DataConfig

    data_cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), source)
    conversations, _ = readers.read_all(data_cfg, run_dir)
    turns = []
    for c in conversations:
        turns += conversation_turns(f"{Path(str(source['path'])).name}#{c['row']}", c["messages"], c["tools"])
    return turns


def pair_turns(pairs_dir: Path) -> list[tuple]:
    """The chosen and the rejected answer of every DPO pair (rejected ones are often not well formed)."""
    from polaris_dpo.messages import from_storage

    turns = []
    for file in sorted(pairs_dir.glob("*.jsonl")):
        for row, line in enumerate(file.read_text(encoding="utf-8").splitlines()):
            pair = from_storage(json.loads(line))
            for side in ("chosen", "rejected"):
                turns.append((f"{file.name}#{row}:{side}", pair["prompt"], pair.get("tools"), pair[side][-1]))
    return turns


def bundled_turns(run_dir: Path, demo_limit: int | None = None) -> list[tuple]:
    """Turns of the data the package ships: the glaive sample, the demo conversations, the demo pairs and
    the BFCL subset's reference calls."""
    return [*read_turns({"reader": "sharegpt", "root": paths.asset("glaive"), "path": "glaive_toolcall_en_demo.json"},
                        run_dir / "glaive"),
            *read_turns({"reader": "demo", "root": paths.asset("demo"), "path": "demo_conversations.jsonl",
                         "limit": demo_limit}, run_dir / "demo"),
            *pair_turns(Path(paths.asset("pairs/demo"))),
            *read_turns({"reader": "bfcl", "root": paths.asset("bfcl"), "path": "."}, run_dir / "bfcl")]


def functionary_case_turns(folder: Path) -> list[tuple]:
    """Turns of functionary's own test cases (v1's in OpenAI's legacy functions / function_call shape)."""
    turns = []
    for name in ("test_case.json", "test_case_v2.json", "test_case_v1.json"):
        case = json.loads((folder / name).read_text(encoding="utf-8"))
        tools = case.get("tools") or [{"type": "function", "function": f} for f in case.get("functions", [])]
        turns += conversation_turns(f"functionary/{name}", case["messages"], tools)
    return turns


def shared_turns(shared_data: Path, run_dir: Path) -> list[tuple]:
    """Turns of ../shared/data: functionary's test cases and the reference calls of every BFCL category
    with answers (up to SHARED_BFCL_LIMIT questions each)."""
    bfcl = shared_data / "bfcl"
    turns = functionary_case_turns(shared_data / "functionary")
    for answers in sorted((bfcl / "possible_answer").glob("*.json")):
        turns += read_turns({"reader": "bfcl", "root": str(bfcl), "path": answers.name,
                             "answers": f"possible_answer/{answers.name}", "limit": SHARED_BFCL_LIMIT},
                            run_dir / answers.stem)
    return turns
