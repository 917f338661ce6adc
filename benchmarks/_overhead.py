"""Shared by overhead_gpt.py and overhead_gan.py: time a plain PyTorch loop and the same training run
through `gen-lightning fit` (the real CLI object, all default callbacks, progress bar, W&B offline),
interleaved A B A B in one process, and print the median time per step and the ratio.

What is timed, on both sides: wall clock from the start of step `warmup` to the start of step
`warmup + steps` (start-to-start, so everything Lightning does between two steps — hooks, logging,
progress bar, callbacks — is inside the window; the batch fetch is in it once per step on both sides).
Validation, checkpoints and sample callbacks fire outside that window (every 100 steps in the configs);
they are work a plain loop would have to do too, and not per-step overhead.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable
from unittest import mock

import torch
from lightning.pytorch.callbacks import Callback

os.environ.setdefault("WANDB_MODE", "offline")  # the CLI's default logger, written locally
os.environ.setdefault("WANDB_SILENT", "true")


class StepClock:
    """Start times of steps `warmup` and `warmup + steps`; `seconds_per_step` once both were seen."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.first = self.last = None
        self.cpu_first = self.cpu_last = None

    def tick(self, step: int) -> None:
        # Wall clock is what a user waits for; this process's CPU time is the same work counted without
        # the time other programs on a loaded machine take from it (it misses W&B's separate process).
        if step == self.warmup:
            self.first, self.cpu_first = time.perf_counter(), time.process_time()
        elif step == self.warmup + self.steps:
            self.last, self.cpu_last = time.perf_counter(), time.process_time()

    @property
    def seconds_per_step(self) -> float:
        if self.first is None or self.last is None:
            raise RuntimeError(f"the run stopped before step {self.warmup + self.steps}")
        return (self.last - self.first) / self.steps

    @property
    def cpu_seconds_per_step(self) -> float:
        self.seconds_per_step  # noqa: B018 - same check
        return (self.cpu_last - self.cpu_first) / self.steps


class StepClockCallback(Callback):
    """The StepClock inside a Trainer: ticks at every training batch start (after the batch is fetched)."""

    def __init__(self, clock: StepClock) -> None:
        self.clock, self.batches = clock, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.tick(self.batches)
        self.batches += 1


def run_cli_fit(args: list[str], warmup: int, steps: int, batches_per_step: int = 1) -> StepClock:
    """`gen-lightning fit <args>` built by the project's own CLI code; returns its clock (time per batch).
    One batch more than timed runs, so the closing clock tick happens."""
    import wandb

    from gen_lightning.cli import build_cli

    # The benchmark's own options are not the CLI's: hide them from LightningCLI's sys.argv check.
    with tempfile.TemporaryDirectory(prefix="gl-bench-") as root, mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = build_cli(
            args
            + [
                "--trainer.max_steps",
                str((warmup + steps + 1) * batches_per_step),
                "--trainer.default_root_dir",
                root,
                "--trainer.logger.init_args.save_dir",
                root,
            ],
            run=False,
        )
        clock = StepClock(warmup, steps)
        cli.trainer.callbacks.append(StepClockCallback(clock))
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        wandb.finish()  # one W&B run per repeat
        return clock


def interleave(sides: dict[str, Callable[[], StepClock]], repeats: int, warmup_repeats: int = 1) -> tuple[dict, dict]:
    """Run the sides A B A B ... so that load from other programs hits both alike; the first `warmup_repeats`
    rounds are run and printed but not counted. The first run of a side in a process pays one-off costs that a
    long training run does not (lazy imports and first calls on its first logging steps, W&B's first history
    records: measured, the first DCGAN repeat was 1.14x where the next six were 1.00-1.06x).
    Returns (wall seconds per step, CPU seconds per step), each {side: [one value per counted repeat]}."""
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(warmup_repeats + repeats):
        counted = r >= warmup_repeats
        for name, fn in sides.items():
            clock = fn()
            if counted:
                wall[name].append(clock.seconds_per_step)
                cpu[name].append(clock.cpu_seconds_per_step)
            label = f"repeat {r - warmup_repeats + 1}/{repeats}" if counted else "warm-up (not counted)"
            print(
                f"  {label} {name:>10}: {clock.seconds_per_step * 1e3:8.2f} ms/step wall, "
                f"{clock.cpu_seconds_per_step * 1e3:8.2f} ms/step CPU",
                flush=True,
            )
    return wall, cpu


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"load average {load}"
    )


def report(times: dict[str, list[float]], baseline: str, candidate: str, goal: float, what: str = "wall") -> float:
    print(f"-- {what} time per step")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        spread = f"min {min(ts) * 1e3:.2f}, max {max(ts) * 1e3:.2f}"
        print(f"{name:>10}: median {med[name] * 1e3:.2f} ms/step ({spread}, {len(ts)} repeats)")
    ratio = med[candidate] / med[baseline]
    # Ratio of the medians, plus the per-repeat ratios: the paired view that load spikes disturb least.
    paired = [c / b for b, c in zip(times[baseline], times[candidate])]
    print(f"per-repeat ratios: {', '.join(f'{r:.3f}' for r in paired)}; median {statistics.median(paired):.3f}")
    verdict = "meets" if ratio <= goal else "misses"
    print(f"RATIO ({what}) {candidate}/{baseline} = {ratio:.3f}x time per step ({verdict} the goal <= {goal:.2f}x)")
    return ratio
