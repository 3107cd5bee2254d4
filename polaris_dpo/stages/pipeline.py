"""stage pipeline: the default job. Build the model, SFT, eval (before), then `pipeline.rounds` times
mine the newest model's failures + DPO + eval, then merge + verify, then the report.

Every step is a stage run in its own folder of the run directory (`<run_dir>/<step>/`), wired to the
step before it through config keys (`eval.model_path`, `mine.model_path`, `dpo.sft_model`,
`dpo.pairs`, `merge.adapters`). After each step the state file `pipeline_state.json` records its
result and wall time, so a run that stopped (a failure, Ctrl-C) continues from the last finished step:
`python -m polaris_dpo hydra.run.dir=<that run>`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from polaris_dpo.config import CATEGORIES, FAILURE_CATEGORIES

log = logging.getLogger(__name__)

STATE_FILE = "pipeline_state.json"
SUMMARY_FILE = "pipeline_summary.json"


class StepFailed(RuntimeError):
    """A pipeline step raised: names the step, the reason and how to resume."""


def write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def step_names(rounds: int) -> list[str]:
    names = ["model", "sft", "eval_before"]
    for r in range(1, rounds + 1):
        names += [f"mine_{r}", f"dpo_{r}", f"eval_{r}"]
    return [*names, "merge", "report"]


def config_fingerprint(cfg: DictConfig) -> dict:
    """The config the finished steps were made with (pipeline keys and paths that do not change results left out)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("run_dir", None)
    plain.get("pipeline", {}).pop("resume", None)
    plain.get("pipeline", {}).pop("rounds", None)
    return plain


class State:
    """`pipeline_state.json`: the finished steps with their results and wall times."""

    def __init__(self, run_dir: Path, cfg: DictConfig):
        self.path = run_dir / STATE_FILE
        self.fingerprint = config_fingerprint(cfg)
        self.steps: dict[str, dict] = {}
        if self.path.exists() and cfg.pipeline.resume:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("config") != self.fingerprint:
                changed = sorted(k for k in set(saved.get("config", {})) | set(self.fingerprint)
                                 if saved.get("config", {}).get(k) != self.fingerprint.get(k))
                log.warning("pipeline: resuming although the config changed in %s since the finished steps ran",
                            ", ".join(changed) or "(unknown)")
            self.steps = saved.get("steps", {})

    def done(self, name: str) -> bool:
        return self.steps.get(name, {}).get("status") == "done"

    def record(self, name: str, status: str, wall_s: float, result: dict | None = None, error: str = "") -> None:
        self.steps[name] = {"status": status, "wall_s": round(wall_s, 2), "result": result or {}}
        if error:
            self.steps[name]["error"] = error
        write_json(self.path, {"config": self.fingerprint, "steps": self.steps})

    def result(self, name: str) -> dict:
        return self.steps[name]["result"]


def step_cfg(cfg: DictConfig, run_dir: Path, step: str, stage: str, **overrides) -> DictConfig:
    """The config of one step: the pipeline's own, run in `<run_dir>/<step>/`, with the wiring overrides."""
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(sub, True)
    sub.run_dir = str(run_dir / step)
    sub.stage.name = stage
    for key, value in overrides.items():
        OmegaConf.update(sub, key, value, merge=False)
    Path(sub.run_dir).mkdir(parents=True, exist_ok=True)
    return sub


def stage_output(result: dict, default: Path) -> str:
    """The model/adapter folder a training stage reports (`output`), or the stage's default folder."""
    for key in ("output", "output_dir", "model_path", "adapter"):
        if result.get(key):
            return str(result[key])
    return str(default)


def eval_rates(result: dict, eval_dir: Path) -> dict:
    """category -> rate (and the sample count) from an eval step's result or its metrics.json."""
    metrics = result.get("metrics")
    if metrics is None:
        metrics = json.loads((eval_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))
    return metrics


def run(cfg: DictConfig) -> dict:
    from polaris_dpo import formats, models
    from polaris_dpo.stages import dpo, eval, merge, mine, sft

    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.update(cfg, "run_dir", str(run_dir), merge=False)
    rounds = int(cfg.pipeline.rounds)
    if rounds < 1:
        raise ValueError(f"pipeline.rounds={rounds}: expected at least 1")
    names = step_names(rounds)
    state = State(run_dir, cfg)

    def sft_step():
        sub = step_cfg(cfg, run_dir, "sft", "sft")
        result = sft.run(sub)
        return {**result, "model": stage_output(result, Path(sub.run_dir) / cfg.sft.output)}

    def eval_step(step: str, model_path: str):
        sub = step_cfg(cfg, run_dir, step, "eval", **{"eval.model_path": model_path})
        result = eval.run(sub)
        return {**result, "model": model_path, "metrics": eval_rates(result, Path(sub.run_dir))}

    def mine_step(step: str, model_path: str, r: int):
        sub = step_cfg(cfg, run_dir, step, "mine", **{"mine.model_path": model_path,
                                                      "mine.name": f"round{r}",
                                                      "mine.pairs_dir": str(run_dir / "pairs"),
                                                      "seed": int(cfg.seed) + r})
        result = mine.run(sub)
        return {**result, "pairs": str(result.get("pairs") or run_dir / "pairs" / f"round{r}")}

    def dpo_step(step: str, model_path: str, pairs: str):
        sub = step_cfg(cfg, run_dir, step, "dpo", **{"dpo.sft_model": model_path, "dpo.pairs": pairs})
        result = dpo.run(sub)
        return {**result, "model": stage_output(result, Path(sub.run_dir) / cfg.dpo.output)}

    def merge_step(adapters: list[str]):
        sub = step_cfg(cfg, run_dir, "merge", "merge", **{"merge.adapters": adapters})
        result = merge.run(sub)
        return {**result, "model": stage_output(result, Path(sub.run_dir) / cfg.merge.output)}

    def newest_model() -> str:
        trained = [n for n in names if n.startswith("dpo_") and state.done(n)]
        return state.result(trained[-1])["model"] if trained else state.result("sft")["model"]

    def run_step(name: str) -> dict:
        if name == "model":
            fmt = formats.from_config(cfg.format)
            return {"model": models.model_path_for(cfg, fmt)}
        if name == "sft":
            return sft_step()
        if name == "eval_before":
            return eval_step(name, state.result("sft")["model"])
        kind, _, num = name.partition("_")
        if kind == "mine":
            return mine_step(name, newest_model(), int(num))
        if kind == "dpo":
            return dpo_step(name, newest_model(), state.result(f"mine_{num}")["pairs"])
        if kind == "eval":
            return eval_step(name, state.result(f"dpo_{num}")["model"])
        if name == "merge":
            return merge_step(merge_adapters(state, rounds))
        if name == "report":
            return write_report(run_dir, cfg, {n: state.steps[n] for n in names if n != "report"}, rounds)
        raise ValueError(f"unknown pipeline step {name!r}")

    started = time.monotonic()
    for index, name in enumerate(names, 1):
        if state.done(name):
            log.info("[%d/%d] %s: done in an earlier run (%.1f s), skipped", index, len(names), name,
                     state.steps[name]["wall_s"])
            continue
        log.info("[%d/%d] %s ...", index, len(names), name)
        t0 = time.monotonic()
        try:
            result = run_step(name)
        except BaseException as err:
            wall = time.monotonic() - t0
            reason = f"{type(err).__name__}: {err}"
            state.record(name, "failed", wall, error=reason)
            log.error("[%d/%d] %s failed after %.1f s: %s", index, len(names), name, wall, reason)
            if isinstance(err, KeyboardInterrupt):
                raise
            raise StepFailed(
                f"pipeline step '{name}' ({index}/{len(names)}) failed: {reason}. Finished steps are kept in "
                f"{state.path}; fix the cause and resume with: python -m polaris_dpo hydra.run.dir={run_dir}"
            ) from err
        wall = time.monotonic() - t0
        state.record(name, "done", wall, result)
        log.info("[%d/%d] %s done in %.1f s", index, len(names), name, wall)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    log.info("pipeline finished in %.1f s (this session); report: %s", time.monotonic() - started,
             summary["paths"]["report"])
    return summary


def merge_adapters(state: State, rounds: int) -> list[str]:
    """The adapter folders to fold into the base, in order: SFT's (when it is an adapter), then each DPO round's
    that is not a continuation of the one before (a continued adapter already holds what it started from)."""
    from polaris_dpo.models import is_adapter_dir

    chain = [state.result("sft")["model"]] + [state.result(f"dpo_{r}")["model"] for r in range(1, rounds + 1)]
    adapters: list[str] = []
    for path in chain:
        if not is_adapter_dir(path):
            continue
        cfg_file = Path(path) / "adapter_config.json"
        base = json.loads(cfg_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if adapters and base and Path(base).resolve() == Path(adapters[-1]).resolve():
            adapters[-1] = path
        else:
            adapters.append(path)
    return adapters


def wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a rate over n samples."""
    if n <= 0:
        return (0.0, 1.0)
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def rates_of(metrics: dict) -> tuple[dict[str, float], int]:
    """(category -> rate over all samples, sample count) from an eval step's metrics."""
    rates = metrics.get("rates") or {}
    return {c: float(rates.get(c, 0.0)) for c in CATEGORIES}, int(metrics.get("samples") or metrics.get("n") or 0)


def write_report(run_dir: Path, cfg: DictConfig, steps: dict[str, dict], rounds: int) -> dict:
    """`report.md` (table per category, before and after each round, charts) and `pipeline_summary.json`."""
    evals = ["eval_before", *[f"eval_{r}" for r in range(1, rounds + 1)]]
    measured = {name: rates_of(steps[name]["result"]["metrics"]) for name in evals}
    before, n_before = measured["eval_before"]
    after, n_after = measured[evals[-1]]
    charts = draw_charts(run_dir, {("before" if n == "eval_before" else f"round {n[5:]}"): measured[n][0]
                                   for n in evals})
    report = run_dir / "report.md"
    lines = [
        "# polaris-dpo pipeline report",
        "",
        f"Held-out prompts, rates over all samples ({n_before} before, {n_after} after; "
        f"{cfg.eval.samples_per_prompt} samples per prompt at temperature {cfg.eval.temperature}). "
        "Brackets: 95 % Wilson interval.",
        "",
        "| category | before | " + " | ".join(f"after round {r}" for r in range(1, rounds + 1)) + " | change |",
        "|---|---|" + "---|" * rounds + "---|",
    ]
    for cat in CATEGORIES:
        cells = []
        for name in evals:
            rate, n = measured[name][0][cat], measured[name][1]
            lo, hi = wilson(rate, n)
            cells.append(f"{100 * rate:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]")
        change = after[cat] - before[cat]
        relative = f" ({100 * change / before[cat]:+.0f} %)" if before[cat] > 0 else ""
        lines.append(f"| `{cat}` | " + " | ".join(cells) + f" | {100 * change:+.1f} pt{relative} |")
    lines += ["", "## Steps", "", "| step | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {info['wall_s']:.1f} |" for name, info in steps.items()]
    lines += ["", f"Pairs: `{steps[f'mine_{rounds}']['result']['pairs']}`  ",
              f"Merged model: `{steps['merge']['result']['model']}`", ""]
    lines += [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    tmp = report.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(report)

    summary = {
        "before": before,
        "after": after,
        "samples": {"before": n_before, "after": n_after},
        "rounds": [{"round": r, "rates": measured[f"eval_{r}"][0], "samples": measured[f"eval_{r}"][1],
                    "pairs": steps[f"mine_{r}"]["result"]["pairs"]} for r in range(1, rounds + 1)],
        "step_wall_s": {name: info["wall_s"] for name, info in steps.items()},
        "total_wall_s": round(sum(info["wall_s"] for info in steps.values()), 2),
        "paths": {
            "report": str(report),
            "pairs": steps[f"mine_{rounds}"]["result"]["pairs"],
            "merged_model": steps["merge"]["result"]["model"],
            "charts": charts,
            "eval_before": str(run_dir / "eval_before"),
            "eval_after": str(run_dir / evals[-1]),
        },
        "seed": int(cfg.seed),
    }
    write_json(run_dir / SUMMARY_FILE, summary)
    return {"report": str(report), "summary": str(run_dir / SUMMARY_FILE)}


def draw_charts(run_dir: Path, series: dict[str, dict[str, float]]) -> list[str]:
    """Failure rates per category for each measured model, as a grouped bar chart (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = FAILURE_CATEGORIES
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (label, rates) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(cats))], [100 * rates[c] for c in cats], width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(cats))], cats, rotation=30, ha="right")
    ax.set_ylabel("% of samples")
    ax.set_title("Failure rates on held-out prompts")
    ax.legend()
    fig.tight_layout()
    path = run_dir / "failure_rates.png"
    tmp = run_dir / ".failure_rates.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return [str(path)]
