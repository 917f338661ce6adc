"""Preemption: SIGTERM or SIGUSR1 during training = save `last.ckpt` and exit cleanly.

Clusters announce the end of a job with a signal: Slurm sends SIGUSR1 (`--signal`) before the time
limit and SIGTERM at preemption; Kubernetes and most schedulers send SIGTERM. Either way the run
finishes the step in progress, writes the run folder's `last.ckpt` (the file `--ckpt_path last`
loads, with optimizer, loop position, data-loader position and RNG state) and exits with status 0.

- SIGTERM: Lightning already catches it, tells every rank, and stops the loop by raising
  SIGTERMException; this callback writes the checkpoint in `on_exception`, where every rank is.
  Lightning (2.6) tells the ranks with a broadcast and an `.item()` before every training batch, a
  host-device sync per step; with this callback it happens after logging batches only (the stop comes
  at most `log_every_n_steps` batches after the signal).
- SIGUSR1: under Slurm with auto-requeue Lightning owns it (saves `hpc_ckpt_N.ckpt` and runs
  `scontrol requeue`); that handler is left alone. Elsewhere SIGUSR1 would kill the process outright,
  so this callback installs a handler that asks for a stop at the end of the current step. Ranks
  agree on the step through a one-flag all-reduce, as a signal reaches them at different times; with
  several processes that look happens on logging steps (the end of the first logging step after the
  signal), so that other steps never wait for the device.
"""

from __future__ import annotations

import signal
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gen_lightning.callbacks.logging_step import logs_this_step


class PreemptionCheckpoint(Callback):
    def __init__(self, sigusr1: bool = True) -> None:
        """
        Args:
            sigusr1: also treat SIGUSR1 as "save and stop" (outside Slurm auto-requeue, which owns it).
        """
        self.sigusr1 = sigusr1
        self._requested: Optional[str] = None  # the signal's name, set by our handler
        self._done = False
        self._after_logging_batch = False  # the batch that just ended logged: the ranks may look at SIGTERM

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop.epoch_loop
        every_batch = loop._broadcast_sigterm_tensor  # called by the loop only with several processes

        def after_logging_batches() -> None:
            if self._after_logging_batch:  # the same batches on every rank
                self._after_logging_batch = False
                every_batch()

        loop._broadcast_sigterm_tensor = after_logging_batches
        # Under Slurm auto-requeue SIGUSR1 is Lightning's, but Lightning registers its handler only after
        # on_fit_start and only where none is installed: taking SIGUSR1 here would silently disable requeueing.
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return
        # Elsewhere an untouched SIGUSR1 is ours to take. Lightning restores the original handlers when fit ends.
        if self.sigusr1 and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._requested = signal.Signals(signum).name

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._after_logging_batch = logs_this_step(trainer)
        # Every rank must stop at the same step, so several processes agree through a collective: on logging steps
        # only (callbacks/logging_step.py; a collective per step would make every step wait for the device), so
        # the save comes at most `log_every_n_steps` steps after the signal. One process looks at every step.
        if trainer.world_size > 1 and not logs_this_step(trainer):
            return
        if trainer.strategy.reduce_boolean_decision(self._requested is not None, all=False):
            self._save_and_report(trainer, self._requested or "SIGUSR1")
            trainer.should_stop = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self._save_and_report(trainer, "SIGTERM")

    def _save_and_report(self, trainer: L.Trainer, name: str) -> None:
        if self._done:
            return
        self._done = True
        checkpoint = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
        if checkpoint is None or not checkpoint.save_last:
            rank_zero_info(f"{name} received at step {trainer.global_step}: no last checkpoint configured, not saved")
            return
        if checkpoint._last_global_step_saved != trainer.global_step:
            checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
        path = checkpoint.last_model_path or checkpoint.format_checkpoint_name({}, checkpoint.CHECKPOINT_NAME_LAST)
        rank_zero_info(
            f"{name} received: stopped at step {trainer.global_step}, saved {path}; continue with --ckpt_path last"
        )
