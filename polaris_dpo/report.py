"""Rates with confidence intervals, bar charts by category (before/after side by side), Markdown tables.

Shared by stage eval, the pipeline summary, the pair-set card, the model card and the sweep summary:

    rate_with_interval(k, n) -> {"rate", "low", "high", "count", "n"}
    category_chart(path, {"before": {cat: rate}, "after": {...}}, title)   # PNG, matplotlib Agg
    category_table({"before": metrics_categories, "after": ...}) -> Markdown
    numeric_leaves({"a": {"b": 1}}) -> {"a.b": 1}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from polaris_dpo.config import CATEGORIES


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion k/n (sensible at 0 and n, unlike the normal one)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_interval(k: int, n: int) -> dict:
    low, high = wilson_interval(k, n)
    return {"rate": k / n if n else 0.0, "low": low, "high": high, "count": k, "n": n}


def rate_or_undefined(k: int, n: int) -> dict:
    """rate_with_interval, but with no samples the rate and its interval are None (undefined), not 0."""
    if n:
        return rate_with_interval(k, n)
    return {"rate": None, "low": None, "high": None, "count": k, "n": n}


def format_rate(entry: dict | None) -> str:
    """`12.5% of 8`, or `-` when the rate is undefined (no samples; older metrics.json files say rate 0 there)."""
    if not entry or entry["rate"] is None or not entry["n"]:
        return "-"
    return f"{entry['rate']:.1%} of {entry['n']}"


def numeric_leaves(node, prefix: str = "") -> dict[str, float]:
    """{"a.b.c": number} for every number in nested mappings (bools and strings dropped): metrics of any
    shape become table rows."""
    out: dict[str, float] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.update(numeric_leaves(value, f"{prefix}{key}."))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix[:-1]] = node
    return out


def category_chart(path: str | Path, series: dict[str, dict[str, float]], title: str = "",
                   ylabel: str = "share of samples", categories: list[str] | None = None) -> Path:
    """A grouped bar chart: one group per category, one bar per series (e.g. before / after), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = categories or [c for c in CATEGORIES if any(c in values for values in series.values())]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(categories) + 2), 4.2), dpi=100)
    for index, (label, values) in enumerate(series.items()):
        xs = [i + (index - (len(series) - 1) / 2) * width for i in range(len(categories))]
        bars = ax.bar(xs, [values.get(c, 0.0) for c in categories], width, label=label)
        for bar, category in zip(bars, categories, strict=True):
            value = values.get(category, 0.0)
            if value > 0:
                ax.annotate(f"{value:.0%}" if value >= 0.01 else f"{value:.1%}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max([0.05] + [v for values in series.values() for v in values.values()]) * 1.15)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _cell(entry: dict | None) -> str:
    if not entry or entry["rate"] is None:
        return "-"
    return f"{entry['rate']:.1%} [{entry['low']:.1%}, {entry['high']:.1%}] ({entry['count']}/{entry['n']})"


def category_table(series: dict[str, dict[str, dict]], categories: list[str] | None = None) -> str:
    """Markdown: a row per category, a column per series (rate, 95 % interval, count/n); a change column for two."""
    categories = categories or [c for c in CATEGORIES if any(c in values for values in series.values())]
    labels = list(series)
    header = "| category | " + " | ".join(labels) + (" | change |" if len(labels) == 2 else " |")
    lines = [header, "|" + "---|" * (len(labels) + 1 + (len(labels) == 2))]
    for category in categories:
        cells = [_cell(series[label].get(category)) for label in labels]
        row = f"| `{category}` | " + " | ".join(cells)
        if len(labels) == 2:
            before, after = (series[label].get(category) for label in labels)
            defined = before and after and None not in (before["rate"], after["rate"])
            change = f"{(after['rate'] - before['rate']) * 100:+.1f} pt" if defined else "-"
            row += f" | {change}"
        lines.append(row + " |")
    return "\n".join(lines)


def breakdown_table(breakdown: dict[str, dict], title: str) -> str:
    """Markdown: a row per group (source, position) with n, ok rate and the most common failure."""
    lines = [f"| {title} | samples | ok | most common failure |", "|---|---|---|---|"]
    for group, entry in breakdown.items():
        failures = {c: v["count"] for c, v in entry["categories"].items() if c != "ok" and v["count"]}
        worst = max(failures, key=failures.get) if failures else "-"
        ok = entry["categories"].get("ok")
        lines.append(f"| {group} | {entry['n']} | {_cell(ok)} | "
                     + (f"`{worst}` ({failures[worst]})" if failures else "-") + " |")
    return "\n".join(lines)
