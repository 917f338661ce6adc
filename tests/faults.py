"""SelfKill: a callback that sends SIGKILL to its own process at a chosen moment of training (tests/test_kill_resume.py).

A kill from outside lands wherever the process happens to be; here the moment is chosen (and seeded by the test),
so every kind of moment is covered on every run: after a step and every save it makes (mid-epoch, or an epoch's last batch and its epoch-end checkpoint), in the
middle of validation, and inside a checkpoint write (the temporary file is complete, the rename not done: what a
kill during the copy leaves behind).
"""

from __future__ import annotations

import os
import signal

import lightning as L
from lightning.pytorch.callbacks import Callback


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class SelfKill(Callback):
    def __init__(self, step: int, where: str = "after_step") -> None:
        """
        Args:
            step: the trainer.global_step at which to die.
            where: `after_step` (when the batch after `step` starts: every save of `step` is done), `validation` (after the first validation batch
                of a validation that starts at `step`), or `checkpoint_write` (inside the write of the checkpoint
                of `step`, after the temporary file is written and before it replaces last.ckpt).
        """
        if where not in ("after_step", "validation", "checkpoint_write"):
            raise ValueError(f"unknown moment {where!r}")
        self.step, self.where = step, where

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.where != "checkpoint_write":
            return
        import gen_lightning.checkpoint_io as checkpoint_io

        real_replace = checkpoint_io.os.replace
        callback = self

        class _DyingOs:  # this module's `os`, with a replace that dies at the chosen checkpoint
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(source, target):
                if trainer.global_step == callback.step and str(target).endswith("last.ckpt"):
                    die()
                return real_replace(source, target)

        checkpoint_io.os = _DyingOs()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.where == "after_step" and trainer.global_step == self.step:
            die()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.where == "validation" and not trainer.sanity_checking and trainer.global_step == self.step:
            die()
