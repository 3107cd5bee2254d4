"""A pair set's README (counts, sources, model and sampling, examples, config) and its chart of pairs per category."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from polaris_dpo import messages as msgs
from polaris_dpo.config import FAILURE_CATEGORIES
from polaris_dpo.pairs.ledger import format_ledger


def write_chart(path: Path, counts: dict[str, Counter], title: str) -> None:
    """Bar chart of pairs per category, train and test stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = [c for c in FAILURE_CATEGORIES if counts["train"][c] or counts["test"][c]] or FAILURE_CATEGORIES
    train = [counts["train"][c] for c in categories]
    test = [counts["test"][c] for c in categories]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.barh(categories, train, label="train", color="#4C72B0")
    ax.barh(categories, test, left=train, label="test", color="#DD8452")
    ax.invert_yaxis()
    ax.set_xlabel("pairs")
    ax.set_title(f"pairs/{title}: pairs per category")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _show_message(message: dict) -> str:
    if message.get("tool_calls"):
        calls = "; ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in message["tool_calls"])
        return (f"{message['content']!r} + " if message.get("content") else "") + f"call {calls}"
    return repr(message.get("content"))


def card(name: str, stats: dict, info: dict, examples: dict[str, list[dict]]) -> str:
    """The pair set's README: counts, where the prompts came from, model and sampling, config, examples."""
    counts = stats["pairs"]
    lines = [f"# Pair set `{name}`", "", info.get("summary", ""), "",
             "Load it with `datasets.load_dataset(\"json\", data_dir=\"pairs/" + name + "\")` or "
             "`polaris_dpo.pairs.load(path)`; stage dpo reads it with `dpo.pairs=pairs/" + name + "`.", "",
             "## Pairs per category", "", "| category | train | test |", "|---|---:|---:|"]
    for category in FAILURE_CATEGORIES:
        train, test = counts["train"].get(category, 0), counts["test"].get(category, 0)
        if train or test:
            lines.append(f"| `{category}` | {train} | {test} |")
    lines.append(f"| **all** | {sum(counts['train'].values())} | {sum(counts['test'].values())} |")
    lines += ["", "![pairs per category](categories.png)", "", "## Counts", "", "```",
              format_ledger(stats["ledger"]), "```", "",
              "Chosen answers: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["chosen_sources"].items())), "",
              "## Where the prompts came from", ""]
    lines += [f"- `{source}`: {n} pairs" for source, n in sorted(stats["prompt_sources"].items())]
    lines += [f"- data: `{info.get('data', '')}`", "", "## Model and sampling", "",
              f"- source: `{info.get('source', '')}`", f"- model: `{info.get('model', '')}`",
              f"- sampling: `{json.dumps(info.get('sampling', {}), sort_keys=True)}`",
              f"- seed: {info.get('seed', '')}", "", "## Examples", ""]
    for category in FAILURE_CATEGORIES:
        for row in examples.get(category, []):
            prompt = msgs.from_storage(row["prompt"])
            last_user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
            chosen = msgs.from_storage(row["chosen"])[0]
            rejected = msgs.from_storage(row["rejected"])[0]
            lines += [f"**{category}** ({row['source']} row {row['source_row']})", "",
                      f"- user: {str(last_user)[:200]!r}", f"- chosen ({row['chosen_source']}): "
                      f"{_show_message(chosen)[:300]}", f"- rejected: {_show_message(rejected)[:300]}", ""]
    lines += ["## Config", "", "```yaml", info.get("config", "").rstrip(), "```", ""]
    return "\n".join(lines)
