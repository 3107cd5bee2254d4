"""The sweep summary: one table (summary.md + summary.csv) of every point of a Hydra multirun.

`SweepSummary` is a Hydra callback (registered in conf/config.yaml). It works with any launcher:

- `on_multirun_start` (the submitting process) writes `sweep_points.json`: every point's overrides,
  so that a point that never reports back (killed, out of time) still gets a row;
- `on_job_end` (inside each point's process, on a SLURM node too) writes `<point dir>/sweep_point.json`
  with its status, final metrics and log path, then rebuilds the summary from all points so far;
- `on_multirun_end` rebuilds it once more.

So the summary never depends on the submitting process staying alive: the last point to finish
writes the complete table. Metrics are the numbers in the dict the stage returned (nested keys
joined with '.') plus the final DPO/SFT figures from the newest `trainer_state.json` under the point.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from polaris_dpo.atomic import atomic_write_json, atomic_write_text
from polaris_dpo.redact import is_multirun, redact_overrides
from polaris_dpo.report import numeric_leaves

log = logging.getLogger(__name__)

POINTS_FILE = "sweep_points.json"  # in the sweep dir: every point's overrides (basic sweeper)
POINT_FILE = "sweep_point.json"  # in each point's dir: its outcome
SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
# Trainer log keys reported when present, in this order (TRL DPO: rewards/*; SFT: mean_token_accuracy).
TRAINER_KEYS = [
    "loss",
    "train_loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "mean_token_accuracy",
    "eval_loss",
    "eval_rewards/margins",
    "eval_rewards/accuracies",
]


def trainer_metrics(point_dir: Path) -> dict[str, float]:
    """Last logged value of each TRAINER_KEYS entry, and the global step, from the newest trainer_state.json."""
    states = sorted(point_dir.rglob("trainer_state.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        state = json.loads(states[-1].read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("sweep summary: cannot read %s: %s", states[-1], err)
        return {}
    found: dict[str, float] = {}
    for entry in state.get("log_history", []):
        for key in TRAINER_KEYS:
            if isinstance(entry.get(key), (int, float)):
                found[key] = entry[key]
    if isinstance(state.get("global_step"), int):
        found["global_step"] = state["global_step"]
    return found


def point_metrics(return_value: Any, point_dir: Path) -> dict[str, float]:
    """Numbers the stage returned (its headline `metrics` dict unprefixed), then trainer_state.json's."""
    metrics: dict[str, float] = {}
    if isinstance(return_value, Mapping):
        metrics.update(numeric_leaves(return_value.get("metrics", {})))
        rest = {k: v for k, v in return_value.items() if k != "metrics"}
        metrics.update({k: v for k, v in numeric_leaves(rest).items() if k not in metrics})
    for key, value in trainer_metrics(point_dir).items():
        metrics.setdefault(key, value)
    return metrics


def submitit_log() -> str | None:
    """The point's stderr log when it runs as a submitit (SLURM) job, else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:  # not inside a submitit job after all
        return None


def sweep_points(task_overrides: list[str]) -> list[list[str]]:
    """The points the basic sweeper makes of these command-line overrides, in job-number order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(task_overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def collect(sweep_dir: Path) -> list[dict]:
    """One record per point: its own sweep_point.json, or a 'no result' row from sweep_points.json."""
    records: dict[int, dict] = {}
    for num, overrides in enumerate((load_json(sweep_dir / POINTS_FILE) or {}).get("points", [])):
        records[num] = {
            "num": num,
            "overrides": overrides,
            "status": "no result",
            "metrics": {},
            "log": submitit_log_guess(sweep_dir, num),
            "error": "the point has not reported (still running, or killed before it could)",
        }
    for path in sweep_dir.glob(f"*/{POINT_FILE}"):
        record = load_json(path)
        if record is not None:
            records[int(record["num"])] = record
    return [records[k] for k in sorted(records)]


def submitit_log_guess(sweep_dir: Path, num: int) -> str | None:
    """submitit names an array task's folder `<array id>_<task index>`; the newest one for this point."""
    logs = sorted((sweep_dir / ".submitit").glob(f"*_{num}/*_{num}_0_log.err"), key=lambda p: p.stat().st_mtime)
    return str(logs[-1]) if logs else None


def metric_columns(records: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for key in record["metrics"]:
            seen.setdefault(key, None)
    preferred = [k for k in TRAINER_KEYS if k in seen]
    return preferred + [k for k in seen if k not in preferred]


def varying_overrides(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Overrides shared by every point, and for each point the ones that differ."""
    common = set.intersection(*(set(r["overrides"]) for r in records)) if records else set()
    ordered_common = [o for o in records[0]["overrides"] if o in common] if records else []
    return ordered_common, [[o for o in r["overrides"] if o not in common] for r in records]


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(records: list[dict], sweep_dir: Path) -> tuple[str, str]:
    """(markdown, csv) of the records."""
    columns = metric_columns(records)
    common, varying = varying_overrides(records)
    header = ["point", "status", "overrides", *columns, "log", "error"]
    rows = []
    for record, own in zip(records, varying, strict=True):
        rows.append(
            [
                record["num"],
                record["status"],
                " ".join(own),
                *[record["metrics"].get(c, "") for c in columns],
                record.get("log") or "",
                record.get("error") or "",
            ]
        )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["point", "status", "overrides", *columns, "log", "error"])
    for record, row in zip(records, rows, strict=True):
        writer.writerow([row[0], row[1], " ".join(record["overrides"]), *row[3:]])

    def cell(value: Any) -> str:
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    failed = sum(r["status"] != "completed" for r in records)
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(records)} points, {len(records) - failed} completed, {failed} failed or without result.",
        f"Overrides common to all points: `{' '.join(common) or '(none)'}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
        "",
    ]
    return "\n".join(lines), buf.getvalue()


@contextmanager
def locked(sweep_dir: Path) -> Iterator[None]:
    """Points finishing together rebuild the summary one after another (the last sees every point)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_summary(sweep_dir: str | Path) -> tuple[Path, Path]:
    sweep_dir = Path(sweep_dir)
    with locked(sweep_dir):
        markdown, table = render(collect(sweep_dir), sweep_dir)
        atomic_write_text(sweep_dir / SUMMARY_MD, markdown)
        atomic_write_text(sweep_dir / SUMMARY_CSV, table)
    return sweep_dir / SUMMARY_MD, sweep_dir / SUMMARY_CSV


class SweepSummary(Callback):
    """Hydra callback: summary.md and summary.csv in the sweep dir of every multirun."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        sweeper = str(config.hydra.sweeper.get("_target_", ""))
        if not sweeper.endswith("BasicSweeper"):
            return  # other sweepers choose their points as they go: rows come from the points alone
        points = [redact_overrides(point) for point in sweep_points(list(config.hydra.overrides.task))]
        atomic_write_json(Path(config.hydra.sweep.dir) / POINTS_FILE, {"points": points})

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        if not is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        point_dir = Path(config.hydra.runtime.output_dir)
        failed = job_return.status != JobStatus.COMPLETED
        value = job_return._return_value  # .return_value re-raises a failure
        record = {
            "num": int(config.hydra.job.num),
            "overrides": redact_overrides(list(config.hydra.overrides.task)),
            "status": "failed" if failed else "completed",
            "metrics": point_metrics(None if failed else value, point_dir),
            "dir": str(point_dir),
            "log": submitit_log() or str(point_dir / f"{config.hydra.job.name}.log"),
            "error": f"{type(value).__name__}: {value}" if failed else None,
        }
        atomic_write_json(point_dir / POINT_FILE, record)
        try:
            write_summary(config.hydra.sweep.dir)
        except Exception as err:  # a summary problem must not turn a finished point into a failed one
            log.warning("sweep summary not written: %s", err)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        md, _ = write_summary(config.hydra.sweep.dir)
        log.info("sweep summary: %s", md)
