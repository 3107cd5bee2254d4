"""stage pipeline: the default job. Build the model, SFT, eval (before), then `pipeline.rounds` times
mine the newest model's failures + DPO + eval, then merge + verify, then the report.

Every step is a small object (`Step`: its name, its stage, the steps it takes its inputs from, what it
gives) that runs its stage in its own folder of the run directory (`<run_dir>/<step>/`), wired to the
steps before it through config keys (`eval.model_path`, `mine.model_path`, `dpo.sft_model`,
`dpo.pairs`, `merge.source`). After each step the state file `pipeline_state.json` records its
result and wall time, so a run that stopped (a failure, Ctrl-C) continues from the last finished step:
`python -m polaris_dpo <the same overrides> hydra.run.dir=<that run>` (a failed step prints it).
A step's config: polaris_dpo/step_config.py; the report: polaris_dpo/pipeline_report.py.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from omegaconf import DictConfig, OmegaConf

from polaris_dpo.atomic import atomic_write_json
from polaris_dpo.pipeline_report import SUMMARY_FILE, write_report
from polaris_dpo.redact import redact_overrides, scrub
from polaris_dpo.step_config import check_step_overrides, step_cfg

log = logging.getLogger(__name__)

STATE_FILE = "pipeline_state.json"


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
