"""stage pipeline: the default job. Build the model, SFT, eval (before), then `pipeline.rounds` times
mine the newest model's failures + DPO + eval, then merge + verify, then the report.

Every step is a stage run in its own folder of the run directory (`<run_dir>/<step>/`), wired to the
step before it through config keys (`eval.model_path`, `mine.model_path`, `dpo.sft_model`,
`dpo.pairs`, `merge.adapters`). After each step the state file `pipeline_state.json` records its
result and wall time, so a run that stopped (a failure, Ctrl-C) continues from the last finished step:
`python -m polaris_dpo <the same overrides> hydra.run.dir=<that run>` (a failed step prints it).
"""

from __future__ import annotations

import copy
import json
import logging
import shlex
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from polaris_dpo import report
from polaris_dpo.atomic import atomic_write_json, atomic_write_text
from polaris_dpo.config import CATEGORIES, FAILURE_CATEGORIES, STAGES, command_line_keys
from polaris_dpo.redact import redact_overrides, scrub

log = logging.getLogger(__name__)

STATE_FILE = "pipeline_state.json"
SUMMARY_FILE = "pipeline_summary.json"


class StepFailed(RuntimeError):
    """A pipeline step raised: names the step, the reason and how to resume."""


def resume_command(run_dir: Path) -> str:
    """The command that continues this run: its own overrides (credentials redacted) and its folder."""
    from hydra.core.hydra_config import HydraConfig

    overrides: list[str] = []
    if HydraConfig.initialized():
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir=")]
    quoted = [shlex.quote(o) for o in redact_overrides(overrides)]
    return " ".join(["python -m polaris_dpo", *quoted, shlex.quote(f"hydra.run.dir={run_dir}")])


def step_names(rounds: int, forgetting: bool = False) -> list[str]:
    names = ["model", "sft", "eval_before", *(["bfcl_before"] if forgetting else [])]
    for r in range(1, rounds + 1):
        names += [f"mine_{r}", f"dpo_{r}", f"eval_{r}", *([f"bfcl_{r}"] if forgetting else [])]
    return [*names, "merge", "report"]


def forgetting_wiring(cfg: DictConfig, model_path: str) -> dict:
    """The eval settings of a forgetting check: every question of the BFCL folder, greedy, one answer each."""
    check = cfg.pipeline.forgetting
    return {"data.reader": "bfcl", "data.root": str(check.root), "data.path": ".", "data.answers": None,
            "data.eval_fraction": 1.0, "data.limit": None, "data.hub_id": None,
            "eval.model_path": model_path, "eval.temperature": 0.0, "eval.samples_per_prompt": 1,
            "eval.max_new_tokens": int(check.max_new_tokens), "eval.max_prompts": check.max_prompts,
            "eval.predictions": None, "eval.compare_to": None}


def config_fingerprint(cfg: DictConfig) -> dict:
    """The config the finished steps were made with (pipeline keys and paths that do not change results left out,
    credentials redacted: the state file is written in the run folder)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("run_dir", None)
    plain.get("pipeline", {}).pop("resume", None)
    plain.get("pipeline", {}).pop("rounds", None)
    return scrub(plain)


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
        atomic_write_json(self.path, {"config": self.fingerprint, "steps": self.steps})

    def result(self, name: str) -> dict:
        return self.steps[name]["result"]


def is_passthrough(cfg: DictConfig, key: str) -> bool:
    """A key inside a free-form dict of the schema (`sft.trl`, `dpo.trl`): new keys allowed, values unchecked."""
    parts = key.split(".")
    for depth in range(1, len(parts)):
        node = OmegaConf.select(cfg, ".".join(parts[:depth]), default=None)
        if not isinstance(node, DictConfig):
            return False
        if OmegaConf.get_type(node) is dict:
            return True
    return False


def parse_override(stage: str, override: str) -> tuple[str, str, bool]:
    """(key, value, adds) of one `pipeline.step_overrides.<stage>` entry; `+key=value` adds a key."""
    where = f"pipeline.step_overrides.{stage}: {override!r}"
    key, equals, value = str(override).partition("=")
    if key.startswith("~"):
        raise ValueError(f"{where}: deleting a key (~) is not supported in a step override; set it to null instead")
    if not equals or not key.lstrip("+"):
        raise ValueError(f"{where}: expected key=value")
    return key.lstrip("+"), value, key.startswith("+")


def apply_override(sub: DictConfig, stage: str, override: str) -> DictConfig:
    """One step override, checked against the schema (key and type) unless it is in a pass-through section."""
    where = f"pipeline.step_overrides.{stage}: {override!r}"
    key, value, adds = parse_override(stage, override)
    if is_passthrough(sub, key):
        with open_dict(sub):
            OmegaConf.update(sub, key, OmegaConf.from_dotlist([f"v={value}"]).v, merge=True)
        return sub
    if adds:
        raise ValueError(f"{where}: '+' adds a key, which only a pass-through section (sft.trl, dpo.trl) accepts; "
                         f"drop the '+' to set a key of the config")
    try:
        return OmegaConf.merge(sub, OmegaConf.from_dotlist([f"{key}={value}"]))
    except OmegaConfBaseException as err:
        raise ValueError(f"{where}: {str(err).splitlines()[0]}") from err


def set_on_command_line(key: str, keys: set[str]) -> bool:
    """`key` or a section holding it (`dpo.trl` for `dpo.trl.beta`) was set on the command line."""
    parts = key.split(".")
    return any(".".join(parts[:depth]) in keys for depth in range(1, len(parts) + 1))


def build_step_cfg(cfg: DictConfig, run_dir: Path, step: str, stage: str, cli_keys: set[str] | None = None,
                   **wiring) -> DictConfig:
    """The config of one step (schema kept): the pipeline's own with the stage's overrides and the wiring.

    A step override never replaces a key the user set on the command line: the command line wins."""
    sub = copy.deepcopy(cfg)
    OmegaConf.set_readonly(sub, False)
    OmegaConf.set_struct(sub, True)
    sub.run_dir = str(run_dir / step)
    sub.stage.name = stage
    cli_keys = command_line_keys() if cli_keys is None else cli_keys
    for override in cfg.pipeline.step_overrides.get(stage) or []:
        key = parse_override(stage, override)[0]
        if set_on_command_line(key, cli_keys):
            log.info("pipeline.step_overrides.%s: %r not applied, %s is set on the command line", stage, override, key)
            continue
        sub = apply_override(sub, stage, override)
    for key, value in wiring.items():
        OmegaConf.update(sub, key, value, merge=False)
    return sub


def step_cfg(cfg: DictConfig, run_dir: Path, step: str, stage: str, **wiring) -> DictConfig:
    """build_step_cfg, run in `<run_dir>/<step>/` (created)."""
    sub = build_step_cfg(cfg, run_dir, step, stage, **wiring)
    Path(sub.run_dir).mkdir(parents=True, exist_ok=True)
    return sub


def check_step_overrides(cfg: DictConfig, run_dir: Path) -> None:
    """Every step's config built before the first step runs: an unknown stage, key or a wrong type fails now."""
    from polaris_dpo.stages import eval, mine

    stages = STAGES[1:]
    unknown = [name for name in cfg.pipeline.step_overrides if name not in stages]
    if unknown:
        raise ValueError(f"pipeline.step_overrides.{unknown[0]}: not a pipeline stage; "
                         f"expected one of: {', '.join(stages)}")
    for stage in stages:
        sub = build_step_cfg(cfg, run_dir, stage, stage)
        if stage == "mine":
            mine.check_config(sub.mine)
        if stage == "eval":
            eval.check_config(sub.eval)
        if stage in ("sft", "dpo"):
            from trl import DPOConfig, SFTConfig

            from polaris_dpo import training

            training.check_passthrough(SFTConfig if stage == "sft" else DPOConfig, sub[stage], stage)


def run(cfg: DictConfig) -> dict:
    from polaris_dpo import formats, models
    from polaris_dpo.stages import dpo, eval, merge, mine, sft

    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.update(cfg, "run_dir", str(run_dir), merge=False)
    rounds = int(cfg.pipeline.rounds)
    if rounds < 1:
        raise ValueError(f"pipeline.rounds={rounds}: expected at least 1")
    check_step_overrides(cfg, run_dir)
    names = step_names(rounds, forgetting=bool(cfg.pipeline.forgetting.root))
    state = State(run_dir, cfg)

    def sft_step():
        result = sft.run(step_cfg(cfg, run_dir, "sft", "sft"))
        return {**result, "model": result["output_dir"]}

    def eval_step(step: str, model_path: str):
        result = eval.run(step_cfg(cfg, run_dir, step, "eval", **{"eval.model_path": model_path}))
        return {**result, "model": model_path}

    def forgetting_step(step: str, model_path: str):
        result = eval.run(step_cfg(cfg, run_dir, step, "eval", **forgetting_wiring(cfg, model_path)))
        return {**result, "model": model_path}

    def mine_step(step: str, model_path: str, r: int):
        sub = step_cfg(cfg, run_dir, step, "mine", **{"mine.model_path": model_path,
                                                      "mine.name": f"round{r}",
                                                      "mine.pairs_dir": str(run_dir / "pairs"),
                                                      "mine.overwrite": True,  # the run's own, redone
                                                      "seed": int(cfg.seed) + r})
        return mine.run(sub)

    def dpo_step(step: str, model_path: str, pairs: str):
        train_file = Path(pairs) / "train.jsonl"
        if train_file.is_file() and not any(line.strip() for line in train_file.open(encoding="utf-8")):
            log.warning("%s: the pair set %s has no training pairs (no failures mined): DPO skipped, "
                        "the model stays %s", step, pairs, model_path)
            return {"skipped": "no training pairs", "model": model_path}
        result = dpo.run(step_cfg(cfg, run_dir, step, "dpo", **{"dpo.sft_model": model_path, "dpo.pairs": pairs}))
        return {**result, "model": result["output_dir"]}

    def merge_step(source: str):
        sub = step_cfg(cfg, run_dir, "merge", "merge", **{"merge.source": source, "merge.adapters": []})
        result = merge.run(sub)
        return {**result, "source": source, "model": str(result.get("merged_dir") or Path(sub.run_dir) / cfg.merge.output)}

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
        if name == "bfcl_before":
            return forgetting_step(name, state.result("sft")["model"])
        kind, _, num = name.partition("_")
        if kind == "bfcl":
            return forgetting_step(name, state.result(f"dpo_{num}")["model"])
        if kind == "mine":
            return mine_step(name, newest_model(), int(num))
        if kind == "dpo":
            return dpo_step(name, newest_model(), state.result(f"mine_{num}")["pairs"])
        if kind == "eval":
            return eval_step(name, state.result(f"dpo_{num}")["model"])
        if name == "merge":
            return merge_step(newest_model())
        if name == "report":
            return write_report(run_dir, cfg, {n: state.steps[n] for n in names if n != "report"}, rounds)
        raise ValueError(f"unknown pipeline step {name!r}")

    def stale(name: str) -> bool:
        """A finished step to redo: the report always (it is cheap), the merge when there is a newer model."""
        if name == "report":
            return True
        return name == "merge" and state.result("merge").get("source") != newest_model()

    started = time.monotonic()
    for index, name in enumerate(names, 1):
        if state.done(name) and not stale(name):
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
                f"{state.path}; fix the cause and resume with: {resume_command(run_dir)}"
            ) from err
        wall = time.monotonic() - t0
        state.record(name, "done", wall, result)
        log.info("[%d/%d] %s done in %.1f s", index, len(names), name, wall)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    log.info("pipeline finished in %.1f s (this session); report: %s", time.monotonic() - started,
             summary["paths"]["report"])
    return summary



def write_report(run_dir: Path, cfg: DictConfig, steps: dict[str, dict], rounds: int) -> dict:
    """`report.md` (a table per category: before, after each round; the chart) and `pipeline_summary.json`."""
    evals = {"before": "eval_before", **{f"round {r}": f"eval_{r}" for r in range(1, rounds + 1)}}
    measured = {label: steps[name]["result"]["metrics"] for label, name in evals.items()}
    last = f"round {rounds}"
    before, after = measured["before"], measured[last]
    chart = report.category_chart(run_dir / "failure_rates.png",
                                  {label: {c: m["categories"][c]["rate"] for c in FAILURE_CATEGORIES}
                                   for label, m in measured.items()},
                                  title="Failure rates on held-out prompts", categories=FAILURE_CATEGORIES)
    settings = after.get("settings", {})
    pairs_path = steps[f"mine_{rounds}"]["result"]["pairs"]
    merged = steps["merge"]["result"]["model"]
    lines = [
        "# polaris-dpo pipeline report", "",
        f"Held-out prompts: {after.get('prompts', '?')}; {settings.get('samples_per_prompt', '?')} samples per prompt "
        f"at temperature {settings.get('temperature', '?')} ({before['n']} samples before, {after['n']} after). "
        "Rates are shares of all samples with a 95 % Wilson interval and the count.", "",
        "## Before and after", "",
        report.category_table({"before": before["categories"], f"after ({last})": after["categories"]}), "",
    ]
    if rounds > 1:
        lines += ["## Each round", "", report.category_table({label: m["categories"] for label, m in measured.items()}),
                  ""]
    forgetting = forgetting_summary(steps, rounds)
    if forgetting:
        lines += ["## Forgetting check: BFCL", "",
                  f"{forgetting['questions']} BFCL questions ({', '.join(forgetting['by_category'])}), one greedy "
                  "answer each, in the job's format. Accuracy is the `ok` share.", "",
                  report.category_table({"before": steps["bfcl_before"]["result"]["metrics"]["categories"],
                                         f"after ({last})": steps[f"bfcl_{rounds}"]["result"]["metrics"]["categories"]}),
                  "", "| BFCL category | before | after |", "|---|---|---|"]
        lines += [f"| {name} | {100 * v['before']:.1f} % | {100 * v['after']:.1f} % |"
                  for name, v in forgetting["by_category"].items()]
        lines += [""]
    lines += [f"![failure rates]({chart.name})", "", "## Steps", "", "| step | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {info['wall_s']:.1f} |" for name, info in steps.items()]
    lines += ["", f"Pair set (last round): `{pairs_path}`  ", f"Merged model: `{merged}`  ",
              f"Evaluations: {', '.join(f'`{run_dir / name}`' for name in evals.values())}", ""]
    report_path = atomic_write_text(run_dir / "report.md", "\n".join(lines))

    def rates(metrics: dict) -> dict[str, float]:
        return {c: metrics["categories"][c]["rate"] for c in CATEGORIES}

    summary = {
        "before": rates(before),
        "after": rates(after),
        "intervals": {"before": {c: [before["categories"][c]["low"], before["categories"][c]["high"]] for c in CATEGORIES},
                      "after": {c: [after["categories"][c]["low"], after["categories"][c]["high"]] for c in CATEGORIES}},
        "samples": {"before": before["n"], "after": after["n"]},
        "prompts": after.get("prompts"),
        "eval_settings": settings,
        "rounds": [{"round": r, "rates": rates(measured[f"round {r}"]), "samples": measured[f"round {r}"]["n"],
                    "pairs": steps[f"mine_{r}"]["result"]["pairs"],
                    "pair_stats": steps[f"mine_{r}"]["result"].get("stats")} for r in range(1, rounds + 1)],
        "forgetting": forgetting,
        "step_wall_s": {name: info["wall_s"] for name, info in steps.items()},
        "total_wall_s": round(sum(info["wall_s"] for info in steps.values()), 2),
        "paths": {"report": str(report_path), "chart": str(chart), "pairs": pairs_path, "merged_model": merged,
                  "eval_before": str(run_dir / "eval_before"), "eval_after": str(run_dir / evals[last])},
        "seed": int(cfg.seed),
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return {"report": str(report_path), "summary": str(run_dir / SUMMARY_FILE)}


def forgetting_summary(steps: dict[str, dict], rounds: int) -> dict | None:
    """BFCL accuracy (the `ok` share) before and after, with its interval, overall and per BFCL category."""
    if "bfcl_before" not in steps:
        return None
    before = steps["bfcl_before"]["result"]["metrics"]
    after = steps[f"bfcl_{rounds}"]["result"]["metrics"]

    def ok(metrics: dict) -> dict:
        return metrics["categories"]["ok"]

    return {
        "questions": before["n"],
        "before": ok(before)["rate"], "after": ok(after)["rate"],
        "intervals": {"before": [ok(before)["low"], ok(before)["high"]], "after": [ok(after)["low"], ok(after)["high"]]},
        "by_category": {source.removeprefix("BFCL_v4_"): {
            "n": entry["n"], "before": entry["categories"]["ok"]["rate"],
            "after": after["by_source"][source]["categories"]["ok"]["rate"]}
            for source, entry in before["by_source"].items()},
    }
