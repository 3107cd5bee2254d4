"""stage pipeline: the default job. Build the model, SFT, eval (before), then `pipeline.rounds` times
mine the newest model's failures + DPO + eval, then merge + verify, then the report.

Every step is a small object (`Step`: its name, its stage, the steps it takes its inputs from, what it
gives) that runs its stage in its own folder of the run directory (`<run_dir>/<step>/`), wired to the
steps before it through config keys (`eval.model_path`, `mine.model_path`, `dpo.sft_model`,
`dpo.pairs`, `merge.source`). After each step the state file `pipeline_state.json` records its
result and wall time, so a run that stopped (a failure, Ctrl-C) continues from the last finished step:
`python -m polaris_dpo <the same overrides> hydra.run.dir=<that run>` (a failed step prints it).
"""

from __future__ import annotations

import copy
import json
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

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


# ----------------------------------------------------------------------------- the steps


class PipelineRun:
    """What the steps of one run share: the config, the run folder, the steps and the state of the finished ones."""

    def __init__(self, cfg: DictConfig, run_dir: Path, steps: list[Step], state: State):
        self.cfg, self.run_dir, self.steps, self.state = cfg, run_dir, steps, state

    def result(self, name: str) -> dict:
        return self.state.result(name)

    def model_of(self, name: str) -> str:
        return self.result(name)["model"]

    def newest_model(self) -> str:
        """The model of the newest finished DPO round, else the SFT model."""
        trained = [step.name for step in self.steps if isinstance(step, Dpo) and self.state.done(step.name)]
        return self.model_of(trained[-1]) if trained else self.model_of("sft")

    def config(self, step: Step, **wiring) -> DictConfig:
        """The step's config, run in `<run_dir>/<step>/`."""
        return step_cfg(self.cfg, self.run_dir, step.name, step.stage, **wiring)


@dataclass(frozen=True)
class Step:
    """One step: runs its `stage` on inputs taken from the finished steps; its result (with `model`, the model
    it leaves for the steps after it) goes into pipeline_state.json."""

    name: str
    stage: ClassVar[str]

    def run(self, pipeline_run: PipelineRun) -> dict:
        raise NotImplementedError

    def stale(self, pipeline_run: PipelineRun) -> bool:
        """A finished step to redo."""
        return False


@dataclass(frozen=True)
class BaseModel(Step):
    """The configured base model, or the tiny model built for the format. Gives: `model`."""

    stage: ClassVar[str] = "model"

    def run(self, pipeline_run: PipelineRun) -> dict:
        from polaris_dpo import formats, models

        cfg = pipeline_run.cfg
        return {"model": models.model_path_for(cfg, formats.from_config(cfg.format))}


@dataclass(frozen=True)
class Sft(Step):
    """SFT of the base model on `data`. Gives: `model`, the SFT output."""

    stage: ClassVar[str] = "sft"

    def run(self, pipeline_run: PipelineRun) -> dict:
        from polaris_dpo.stages import sft

        result = sft.run(pipeline_run.config(self))
        return {**result, "model": result["output_dir"]}


@dataclass(frozen=True)
class Eval(Step):
    """Stage eval of the model of step `model_from` on the held-out prompts of `data`. Gives: metrics, `model`."""

    model_from: str
    stage: ClassVar[str] = "eval"

    def wiring(self, cfg: DictConfig, model: str) -> dict:
        return {"eval.model_path": model}

    def run(self, pipeline_run: PipelineRun) -> dict:
        from polaris_dpo.stages import eval

        model = pipeline_run.model_of(self.model_from)
        result = eval.run(pipeline_run.config(self, **self.wiring(pipeline_run.cfg, model)))
        return {**result, "model": model}


@dataclass(frozen=True)
class ForgettingCheck(Eval):
    """Stage eval of the model of step `model_from` on the BFCL questions of `pipeline.forgetting`."""

    def wiring(self, cfg: DictConfig, model: str) -> dict:
        return forgetting_wiring(cfg, model)


@dataclass(frozen=True)
class Mine(Step):
    """Round `number`: the newest model's failures on the train prompts, as pairs. Gives: `pairs`, stats."""

    number: int
    stage: ClassVar[str] = "mine"

    def run(self, pipeline_run: PipelineRun) -> dict:
        from polaris_dpo.stages import mine

        return mine.run(pipeline_run.config(self, **{"mine.model_path": pipeline_run.newest_model(),
                                                     "mine.name": f"round{self.number}",
                                                     "mine.pairs_dir": str(pipeline_run.run_dir / "pairs"),
                                                     "mine.overwrite": True,  # the run's own, redone
                                                     "seed": int(pipeline_run.cfg.seed) + self.number}))


@dataclass(frozen=True)
class Dpo(Step):
    """DPO of the newest model on the pairs of step `pairs_from`. Gives: `model`, the DPO output (the model
    it started from when there are no training pairs)."""

    pairs_from: str
    stage: ClassVar[str] = "dpo"

    def run(self, pipeline_run: PipelineRun) -> dict:
        from polaris_dpo.stages import dpo

        model, pairs = pipeline_run.newest_model(), pipeline_run.result(self.pairs_from)["pairs"]
        train_file = Path(pairs) / "train.jsonl"
        if train_file.is_file() and not any(line.strip() for line in train_file.open(encoding="utf-8")):
            log.warning("%s: the pair set %s has no training pairs (no failures mined): DPO skipped, "
                        "the model stays %s", self.name, pairs, model)
            return {"skipped": "no training pairs", "model": model}
        result = dpo.run(pipeline_run.config(self, **{"dpo.sft_model": model, "dpo.pairs": pairs}))
        return {**result, "model": result["output_dir"]}


@dataclass(frozen=True)
class Merge(Step):
    """The newest model merged into its full-precision base and verified. Gives: `model`, the merged folder;
    `source`. Redone when there is a newer model than the one it merged."""

    stage: ClassVar[str] = "merge"

    def run(self, pipeline_run: PipelineRun) -> dict:
        from polaris_dpo.stages import merge

        source = pipeline_run.newest_model()
        sub = pipeline_run.config(self, **{"merge.source": source, "merge.adapters": []})
        result = merge.run(sub)
        return {**result, "source": source,
                "model": str(result.get("merged_dir") or Path(sub.run_dir) / pipeline_run.cfg.merge.output)}

    def stale(self, pipeline_run: PipelineRun) -> bool:
        return pipeline_run.result(self.name).get("source") != pipeline_run.newest_model()


@dataclass(frozen=True)
class Report(Step):
    """report.md and pipeline_summary.json from every step before it. Always redone (it is cheap)."""

    rounds: int
    stage: ClassVar[str] = "report"

    def run(self, pipeline_run: PipelineRun) -> dict:
        steps = {step.name: pipeline_run.state.steps[step.name] for step in pipeline_run.steps if step is not self}
        return write_report(pipeline_run.run_dir, pipeline_run.cfg, steps, self.rounds)

    def stale(self, pipeline_run: PipelineRun) -> bool:
        return True


def pipeline_steps(rounds: int, forgetting: bool = False) -> list[Step]:
    """The base model, SFT and its evaluation, then per round mining, DPO and evaluation, then the merge and the
    report; with `forgetting`, a BFCL check after each evaluation."""
    def evaluations(name: str, model_from: str) -> list[Step]:
        check = [ForgettingCheck(name.replace("eval", "bfcl"), model_from)] if forgetting else []
        return [Eval(name, model_from), *check]

    steps: list[Step] = [BaseModel("model"), Sft("sft"), *evaluations("eval_before", "sft")]
    for number in range(1, rounds + 1):
        steps += [Mine(f"mine_{number}", number), Dpo(f"dpo_{number}", pairs_from=f"mine_{number}"),
                  *evaluations(f"eval_{number}", f"dpo_{number}")]
    return [*steps, Merge("merge"), Report("report", rounds)]


def step_names(rounds: int, forgetting: bool = False) -> list[str]:
    return [step.name for step in pipeline_steps(rounds, forgetting)]


# ----------------------------------------------------------------------------- the run


def run(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.update(cfg, "run_dir", str(run_dir), merge=False)
    rounds = int(cfg.pipeline.rounds)
    if rounds < 1:
        raise ValueError(f"pipeline.rounds={rounds}: expected at least 1")
    check_step_overrides(cfg, run_dir)
    steps = pipeline_steps(rounds, forgetting=bool(cfg.pipeline.forgetting.root))
    state = State(run_dir, cfg)
    pipeline_run = PipelineRun(cfg, run_dir, steps, state)

    started = time.monotonic()
    for index, step in enumerate(steps, 1):
        progress = f"[{index}/{len(steps)}] {step.name}"
        if state.done(step.name) and not step.stale(pipeline_run):
            log.info("%s: done in an earlier run (%.1f s), skipped", progress, state.steps[step.name]["wall_s"])
            continue
        log.info("%s ...", progress)
        t0 = time.monotonic()
        try:
            result = step.run(pipeline_run)
        except BaseException as err:
            wall = time.monotonic() - t0
            reason = f"{type(err).__name__}: {err}"
            state.record(step.name, "failed", wall, error=reason)
            log.error("%s failed after %.1f s: %s", progress, wall, reason)
            if isinstance(err, KeyboardInterrupt):
                raise
            raise StepFailed(
                f"pipeline step '{step.name}' ({index}/{len(steps)}) failed: {reason}. Finished steps are kept in "
                f"{state.path}; fix the cause and resume with: {resume_command(run_dir)}"
            ) from err
        wall = time.monotonic() - t0
        state.record(step.name, "done", wall, result)
        log.info("%s done in %.1f s", progress, wall)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    log.info("pipeline finished in %.1f s (this session); report: %s", time.monotonic() - started,
             summary["paths"]["report"])
    return summary


# ----------------------------------------------------------------------------- the report


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
