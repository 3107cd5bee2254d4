"""What the training and sampling benchmarks share: the pair set, the models, child processes, step timing.

Every training run happens in a child process of its own (`python -m benchmarks.dpo_train SPEC`), so that
its peak memory (ru_maxrss) is its own and one run's caches cannot speed up the next.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_PAIRS = REPO / "pairs" / "demo"
SCRATCH_PREFIX = "polaris-bench-"


def scratch_dir() -> Path:
    """A fresh temporary folder for one benchmark (run dirs, checkpoints, caches), removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def compose(overrides: list[str], run_dir: Path):
    """The job config the CLI would build from `overrides` (Hydra's defaults, conf/ and the schema)."""
    from polaris_dpo.compose import compose as compose_config

    return compose_config(overrides, run_dir=str(run_dir))


def pair_set(scratch: Path, min_rows: int = 64) -> tuple[Path, str]:
    """(pair set folder, where it came from): the bundled pairs/demo, or pairs mined synthetically from the demo data."""
    train = DEMO_PAIRS / "train.jsonl"
    if train.is_file() and sum(1 for line in train.open() if line.strip()) >= min_rows:
        return DEMO_PAIRS, "pairs/demo"
    from polaris_dpo.stages import mine

    cfg = compose(["stage=mine", "mine.source=synthetic", f"mine.pairs_dir={scratch / 'pairs'}", "mine.name=bench",
                   "mine.max_prompts=400"], scratch / "mine_run")
    result = mine.run(cfg)
    return Path(result["pairs"]), "synthetic pairs from stage mine (mine.source=synthetic; pairs/demo not present)"


def subset_pairs(pairs: Path, rows: int, scratch: Path) -> Path:
    """A pair set folder holding the first `rows` training pairs of `pairs`."""
    target = scratch / f"pairs-{rows}"
    target.mkdir(parents=True, exist_ok=True)
    with (pairs / "train.jsonl").open() as source:
        lines = [line for line in source if line.strip()][:rows]
    (target / "train.jsonl").write_text("".join(lines))
    return target


MODELS = ("tiny", "smollm2-135m")  # the config groups' names: the tiny test model, the real model of the default job


def model_folders(scratch: Path, model: str, overrides: list[str] = ()) -> tuple[str, Path]:
    """(model folder, tokenizer folder with the format's tokens and chat template) of `model=<model>`.

    The model folder is the one every stage loads (the tiny model built, SmolLM2 converted from its GGUF
    file, both cached). The tokenizer folder is what a stage saves next to its weights; the plain TRL
    script loads it as a user loading an SFT output would.
    """
    from polaris_dpo import formats, models

    cfg = compose(["stage=dpo", f"model={model}", *overrides], scratch / f"{model}-model_run")
    fmt = formats.from_config(cfg.format)
    model_dir = models.model_path_for(cfg, fmt)
    tokenizer_dir = scratch / f"{model}-tokenizer"
    models.load_tokenizer(model_dir, fmt).save_pretrained(str(tokenizer_dir))
    return model_dir, tokenizer_dir


def child(module: str, spec: dict, timeout: float = 900) -> dict:
    """Run `python -m benchmarks.<module> SPEC_JSON` in a fresh process; return the JSON it wrote to spec["result"]."""
    result_file = Path(spec["result"])
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_CACHE=str(result_file.parent / f"{result_file.stem}-datasets"),  # no cross-run cache hits
               TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", json.dumps(spec)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not result_file.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise RuntimeError(f"benchmarks.{module} {spec.get('side', '')} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(result_file.read_text())


def write_result(path: str | Path, result: dict) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def step_timer():
    """A TrainerCallback that stamps the end of every optimiser step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.stamps: list[tuple[float, float]] = []  # (wall clock, this process's CPU time)
            self.train_begin: tuple[float, float] | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.train_begin = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append((time.perf_counter(), time.process_time()))

        def step_seconds(self, clock: int = 0) -> list[float]:
            """Duration of each step (clock 0: wall, 1: CPU time), the first measured from the start of training."""
            marks = [self.train_begin, *self.stamps] if self.train_begin is not None else self.stamps
            return [b[clock] - a[clock] for a, b in zip(marks, marks[1:], strict=False)]

    return StepTimer()


def steady(step_seconds: list[float], warmup: int) -> float:
    """Median step time after the first `warmup` steps (allocator growth, lazy init): robust on a shared machine."""
    rest = step_seconds[warmup:] or step_seconds
    return statistics.median(rest)


def ratio(ours: float, plain: float) -> float:
    return ours / plain if plain else float("nan")
