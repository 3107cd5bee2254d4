"""Turn a benchmark's own result dict into the runner's {"title", "rows", "notes"} shape."""

from __future__ import annotations


def as_report(result: dict, title: str, units: dict[str, str]) -> dict:
    """Pass a runner-shaped result through; otherwise make rows of its numbers (units by key) and notes of the rest."""
    if "rows" in result and isinstance(result["rows"], list) or "skipped" in result:
        return {"title": title, **result}
    rows, notes = [], []
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key.replace("_", " "), value, units.get(key, "")))
        else:
            notes.append(f"{key.replace('_', ' ')}: {value}")
    return {"title": title, "rows": rows, "notes": notes}
