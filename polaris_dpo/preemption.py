"""Checkpoint-and-exit on SLURM preemption, so that a requeued job resumes instead of starting over.

SLURM ends a job it preempts or requeues (`scontrol requeue`) with SIGTERM, and a job submitted
with `--signal=USR1@<seconds>` gets SIGUSR1 that long before its time limit. `PreemptionCallback`
(a transformers TrainerCallback, added to the trainer by stages sft and dpo) turns either signal into:
finish the current step, save a checkpoint into the stage's `checkpoints/`, exit with EXIT_PREEMPTED.
On SIGUSR1 inside a SLURM job it also runs `scontrol requeue $SLURM_JOB_ID` (on SIGTERM SLURM is
already requeueing or cancelling the job). The requeued job runs with `train.resume=true`
(scripts/slurm/train.sbatch passes it when SLURM_RESTART_COUNT > 0) and continues from that checkpoint.

With several processes the flag is agreed on by all ranks (one all-reduce per step) so that every rank
saves at the same step; a rank that missed the signal would otherwise wait forever in the next collective.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading

from transformers import TrainerCallback

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 143  # what a shell reports for a process ended by SIGTERM
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def requeue_slurm_job() -> bool:
    """`scontrol requeue $SLURM_JOB_ID`; False (with a log line) outside SLURM or when it fails."""
    job_id = os.environ.get("SLURM_JOB_ID")  # an array task has its own job id too
    if not job_id:
        log.warning("preemption: not inside a SLURM job, nothing to requeue")
        return False
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        log.error("preemption: scontrol requeue %s failed: %s", job_id, result.stderr.strip())
        return False
    log.info("preemption: job %s requeued", job_id)
    return True


def any_rank(flag: bool) -> bool:
    """True when `flag` is set on any process of a distributed run (the flag itself when there is one)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class PreemptionCallback(TrainerCallback):
    """On SIGUSR1 / SIGTERM: save a checkpoint at the end of the current step, (re)queue, exit."""

    def __init__(self, signals: tuple[int, ...] = SIGNALS):
        self.signals = signals
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum
        log.warning("preemption: got %s, saving a checkpoint after this step", signal.Signals(signum).name)

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            log.warning("preemption: training outside the main thread, signals are not caught")
            return
        for signum in self.signals:
            self.previous[signum] = signal.signal(signum, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(self.received is not None):
            self.received = self.received or signal.SIGTERM  # another rank got it
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.received is None:
            return control
        log.warning("preemption: checkpoint of step %d saved in %s", state.global_step, args.output_dir)
        if self.received == signal.SIGUSR1 and state.is_world_process_zero:
            requeue_slurm_job()
        raise SystemExit(EXIT_PREEMPTED)

    def on_train_end(self, args, state, control, **kwargs):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
