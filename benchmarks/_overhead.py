"""Shared by overhead_gpt.py and overhead_gan.py: time a plain PyTorch loop and the same training run through
`gen-lightning fit` (the real CLI object, all default callbacks, progress bar, W&B offline) in lockstep, in one
process, and print the time per step of each side and the ratio.

Lockstep: the plain loop is a generator of steps. Inside the Lightning run a callback (`Lockstep`), at the start of
every `chunk`-th training batch after `warmup`, closes the Lightning chunk just run and runs the plain loop's next
`chunk` steps, timed on their own and left out of the Lightning clock. The two sides therefore alternate every
`chunk` steps (~0.5 s for the DCGAN) instead of every run (~5 s). Why: on this shared machine the speed of the same
plain loop drifts by up to 15% between runs a few seconds apart (44-51 ms per DCGAN batch in one run of the old
run-after-run interleaving, 53-59 ms minutes later), which moved one run's ratio by ±0.05 when the overhead measured
is ~0.02-0.04; side by side every half second, both see the same machine.

What is timed, on both sides: wall clock (and this process's CPU time) from the start of a step to the start of the
step `chunk` steps later (start-to-start, so everything Lightning does between two batches — hooks, logging, progress
bar, callbacks — is inside, and the batch fetch is in it once per step on both sides). `chunk` is the configs'
`log_every_n_steps` (10): every chunk of either side holds exactly one logging step. Validation, checkpoints and sample
grids fire outside the timed batches (every 100 batches in the configs, the runs stop before); they are work a plain
loop would have to do too, and not per-step overhead.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Iterator
from unittest import mock

import torch
from lightning.pytorch.callbacks import Callback

os.environ.setdefault("WANDB_MODE", "offline")  # the CLI's default logger, written locally
os.environ.setdefault("WANDB_SILENT", "true")

Clock = tuple[float, float]  # (wall seconds, this process's CPU seconds)


def _now() -> Clock:
    # Wall clock is what a user waits for; this process's CPU time is the same work counted without the time other
    # programs on a loaded machine take from it (it misses W&B's separate process).
    return time.perf_counter(), time.process_time()


def _since(start: Clock) -> Clock:
    wall, cpu = _now()
    return wall - start[0], cpu - start[1]


class Lockstep(Callback):
    """Runs the plain loop's steps in chunks between the Trainer's batches (see the module docstring)."""

    def __init__(self, plain_steps: Iterator[None], warmup: int, chunk: int, chunks: int) -> None:
        self.plain_steps, self.warmup, self.chunk, self.chunks = plain_steps, warmup, chunk, chunks
        self.batches = 0
        self.since: Clock | None = None
        self.lightning: list[Clock] = []  # one per chunk of `chunk` batches
        self.plain: list[Clock] = []  # one per chunk of `chunk` plain steps, each run just before lightning's

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        batch_number, self.batches = self.batches, self.batches + 1
        if batch_number < self.warmup or (batch_number - self.warmup) % self.chunk:
            return
        if self.since is not None:
            self.lightning.append(_since(self.since))
        if len(self.plain) < self.chunks:
            if not self.plain:
                for _ in range(self.warmup):  # the plain side's own warm-up, untimed
                    next(self.plain_steps)
            start = _now()
            for _ in range(self.chunk):
                next(self.plain_steps)
            self.plain.append(_since(start))
        self.since = _now()


def lockstep_batches(warmup: int, chunk: int, chunks: int) -> int:
    """Training batches of one Lightning run: the warm-up, the timed chunks, and one more, at whose start the last
    chunk closes (also the plain loop's length: it runs `warmup` untimed steps and the same chunks)."""
    return warmup + chunk * chunks + 1


def timed_chunks(parser, steps: int, chunk: int) -> int:
    """`--steps` as a number of chunks; a parser error unless it is a whole number of chunks, at least two."""
    if steps % chunk or steps < 2 * chunk:
        parser.error(f"--steps must be a multiple of {chunk} (the logging interval), at least {2 * chunk}")
    return steps // chunk


def run_lockstep(
    args: list[str],
    plain_steps: Iterator[None],
    warmup: int,
    chunk: int,
    chunks: int,
    batches_per_step: int = 1,
) -> tuple[list[Clock], list[Clock]]:
    """`gen-lightning fit <args>` built by the project's own CLI code, with the plain loop run in lockstep inside it.
    Returns (plain, lightning): `chunks` (wall, CPU) seconds each, chunk k of the plain loop run just before chunk k
    of the Lightning run. `batches_per_step`: optimizer steps per batch (a GAN's n_critic + 1), as max_steps counts."""
    import wandb

    from gen_lightning.cli import build_cli

    batches = lockstep_batches(warmup, chunk, chunks)
    # The benchmark's own options are not the CLI's: hide them from LightningCLI's sys.argv check.
    with tempfile.TemporaryDirectory(prefix="gl-bench-") as root, mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = build_cli(
            args
            + [
                "--trainer.max_steps",
                str(batches * batches_per_step),
                "--trainer.default_root_dir",
                root,
                "--trainer.logger.init_args.save_dir",
                root,
            ],
            run=False,
        )
        lockstep = Lockstep(plain_steps, warmup, chunk, chunks)
        cli.trainer.callbacks.append(lockstep)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        wandb.finish()  # one W&B run per repeat
    if len(lockstep.lightning) != chunks:
        raise RuntimeError(f"the run stopped after {lockstep.batches} batches, before its {chunks} chunks were timed")
    return lockstep.plain, lockstep.lightning


def repeat_lockstep(
    run: Callable[[], tuple[list[Clock], list[Clock]]], repeats: int, warmup_repeats: int, chunk: int
) -> dict[str, list[Clock]]:
    """Runs `run` (one Lightning run with the plain loop in lockstep) `warmup_repeats + repeats` times; the first
    `warmup_repeats` are printed but not counted. The first run in a process pays one-off costs that a long training
    run does not (lazy imports and first calls on its first logging steps, W&B's first history records: measured,
    the first DCGAN repeat was 1.14x where the next six were 1.00-1.06x). Returns {side: [(wall, CPU) seconds per
    step, one per counted chunk]}, chunk k of "plain" run just before chunk k of "lightning"."""
    chunks: dict[str, list[Clock]] = {"plain": [], "lightning": []}
    for r in range(warmup_repeats + repeats):
        plain, lightning = run()
        label = f"repeat {r - warmup_repeats + 1}/{repeats}" if r >= warmup_repeats else "warm-up (not counted)"
        for name, times in (("plain", plain), ("lightning", lightning)):
            per_step = [(wall / chunk, cpu / chunk) for wall, cpu in times]
            if r >= warmup_repeats:
                chunks[name].extend(per_step)
            wall_ms = statistics.median(w for w, _ in per_step) * 1e3
            cpu_ms = statistics.median(c for _, c in per_step) * 1e3
            print(
                f"  {label} {name:>10}: {wall_ms:8.2f} ms/step wall, {cpu_ms:8.2f} ms/step CPU "
                f"(median of {len(per_step)} chunks of {chunk})",
                flush=True,
            )
    return chunks


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


def report(chunks: dict[str, list[Clock]], goal: float) -> float:
    """Prints each side's median time per step, the paired ratios and the verdict; returns the wall-clock RATIO: the
    median over chunk pairs of lightning chunk / the plain chunk run just before it. A pair is half a second of one
    machine, so the paired ratio is what drift between seconds disturbs least; the ratio of the totals (the
    amortized mean, which a load spike in one chunk moves) is printed next to it."""
    ratio = 0.0
    for index, what in ((0, "wall"), (1, "CPU (this process)")):
        plain = [c[index] for c in chunks["plain"]]
        lightning = [c[index] for c in chunks["lightning"]]
        print(f"-- {what} time per step")
        for name, ts in (("plain", plain), ("lightning", lightning)):
            print(
                f"{name:>10}: median {statistics.median(ts) * 1e3:.2f} ms/step "
                f"(min {min(ts) * 1e3:.2f}, max {max(ts) * 1e3:.2f}, {len(ts)} chunks)"
            )
        paired = sorted(c / b for b, c in zip(plain, lightning))
        quartiles = statistics.quantiles(paired, n=4)
        total = sum(lightning) / sum(plain)
        median = statistics.median(paired)
        print(
            f"paired chunk ratios: median {median:.3f}, quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}, "
            f"range {paired[0]:.3f}-{paired[-1]:.3f}; ratio of the totals {total:.3f}"
        )
        verdict = "meets" if median <= goal else "misses"
        print(f"RATIO ({what}) lightning/plain = {median:.3f}x time per step ({verdict} the goal <= {goal:.2f}x)")
        if index == 0:
            ratio = median
    return ratio
