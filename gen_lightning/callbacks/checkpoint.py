"""GenCheckpoint: `last.ckpt` always, plus the best checkpoint by the model family's own metric.

Each LightningModule names its metric in `checkpoint_metric = (key, "min" | "max")` (VAE: val/elbo,
max); a module without one (the GAN) is judged by a callback's (GenerativeMetrics: val/fid, min); the
user can still set `--checkpoint.monitor` to override it.

Stock ModelCheckpoint saves at epoch/validation ends only, so a run stopped by `max_steps` in the
middle of an epoch leaves a `last.ckpt` several steps behind the trained weights. Here `last.ckpt`
is also written when training ends, so it always holds the final state.

Checkpoints are written atomically (gen_lightning/checkpoint_io.py) whenever the strategy uses
Lightning's plain torch checkpoint I/O (single device, DDP); DeepSpeed/FSDP write their own shards.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gen_lightning.capabilities import NamesCheckpointMetric
from gen_lightning import dead_rank
from gen_lightning.data.base import end_training_epochs
from gen_lightning.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries

log = logging.getLogger(__name__)


def chosen_metric(pl_module: L.LightningModule, callbacks: list) -> Optional[tuple[str, str]]:
    """The metric the best checkpoint is chosen by: the module's own (VAE: val/elbo), else one a callback
    computes (GenerativeMetrics: val/fid -- what GAN users select checkpoints by), else none (last only)."""
    candidates = [pl_module, *callbacks]
    return next(
        (
            c.checkpoint_metric
            for c in candidates
            if isinstance(c, NamesCheckpointMetric) and c.checkpoint_metric is not None
        ),
        None,
    )


class GenCheckpoint(ModelCheckpoint):
    def __init__(
        self,
        dirpath: Optional[str] = None,
        monitor: Optional[str] = None,
        mode: str = "min",
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_train_steps: Optional[int] = None,
        every_n_epochs: Optional[int] = None,
        filename: Optional[str] = None,
    ) -> None:
        self._user_monitor = monitor is not None
        self._last_written_step = -1  # step of the newest `last.ckpt`, whoever wrote it
        self._resumed = False  # top-k state loaded from a checkpoint of this folder
        self._due_at_epoch_end = (False, False)  # saves of an epoch's last batch, made at the epoch's end
        super().__init__(
            dirpath=dirpath,
            monitor=monitor,
            mode=mode,
            save_top_k=save_top_k,
            save_last=save_last,
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            filename=filename,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        metric = chosen_metric(pl_module, trainer.callbacks)
        if not self._user_monitor and metric is not None:
            self.monitor, mode = metric
            # Same bookkeeping ModelCheckpoint does for `mode` in its __init__.
            self.mode = mode
            self.kth_value = torch.tensor(float("inf") if mode == "min" else float("-inf"))
            if self.filename is None:
                self.filename = "best-{step}"
        strategy = trainer.strategy
        if type(getattr(strategy, "_checkpoint_io", None)) in (TorchCheckpointIO, type(None)):
            strategy.checkpoint_io = AtomicCheckpointIO()
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath is not None:
            # A writer killed mid-save leaves its full-size temporary file behind; the next run removes it.
            remove_stale_temporaries(self.dirpath)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._resumed = self.dirpath == state_dict.get("dirpath", self.dirpath)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._resumed and trainer.is_global_zero:
            self._remove_unknown_best_files()

    def _remove_unknown_best_files(self) -> None:
        """After a resume, the best files the restored top-k does not know: written by a run killed after its
        top-k save and before its next last.ckpt. The resumed run redoes that step and saves them again (without
        this, beside a `-v1` twin: save_top_k 1 would end with two best files)."""
        prefix = (self.filename or "").split("{")[0]
        if not prefix or not os.path.isdir(self.dirpath):
            return
        known = {os.path.realpath(p) for p in [*self.best_k_models, self.best_model_path, self.last_model_path] if p}
        for name in os.listdir(self.dirpath):
            path = os.path.join(self.dirpath, name)
            if name.startswith(prefix) and name.endswith(self.FILE_EXTENSION) and os.path.realpath(path) not in known:
                os.remove(path)
                log.info("removed %s: newer than the checkpoint this run resumed from, it is made again", path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        dead_rank.note_progress(trainer.global_step)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and not trainer.sanity_checking:
            # A checkpoint of an epoch's last batch, taken here, resumes one epoch ahead (Lightning 2.6 restarts
            # it as if the epoch had been closed and counted; measured: the next epoch's windows/shuffle came from
            # epoch + 1, and a max_epochs run ended an epoch early). Taken at the epoch's end instead -- the same
            # weights and step, with the loops in the state Lightning's own epoch-end checkpoints resume from.
            self._due_at_epoch_end = self._saves_due(trainer)
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # The step that reaches max_steps is saved here, where Lightning's own step checkpoints are
        # taken: by on_train_end the loops have closed the epoch, and a run resumed from that state
        # counts the epoch twice (measured: its next epoch gets another shuffle than an uninterrupted run).
        # Lightning 2.6 defers step checkpoints until the monitored (validation) metric exists, so
        # `every_n_train_steps` alone never refreshed last.ckpt between validations: do it here.
        if self._saves_due(trainer)[1]:
            self._refresh_last(trainer)

    def _saves_due(self, trainer: L.Trainer) -> tuple[bool, bool]:
        """(a top-k step checkpoint, last.ckpt) due at the end of this batch."""
        n = self._every_n_train_steps
        periodic = n >= 1 and trainer.global_step % n == 0 and not self._should_skip_saving_checkpoint(trainer)
        last = (
            self.save_last
            and (periodic or 0 < trainer.max_steps <= trainer.global_step)
            and trainer.global_step != self._last_written_step
        )
        return periodic, bool(last)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # max_steps reached mid-epoch: Lightning still "ends" the epoch, and a checkpoint taken now records it
        # as processed though its batches were not all seen; the resumed run then shuffles its next epoch
        # as epoch + 1 (measured on the GAN, whose metric-less checkpoints Lightning takes at epoch ends:
        # 2-process DDP resumed 1e-3 off). The batch-end save above already holds this step.
        stopped_mid_epoch = not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if 0 < trainer.max_steps <= trainer.global_step and stopped_mid_epoch:
            return
        if trainer.fit_loop._combined_loader is not None:  # the epoch is over: its checkpoints resume at the next
            end_training_epochs(trainer.fit_loop._combined_loader.flattened)
        super().on_train_epoch_end(trainer, pl_module)
        topk, last = self._due_at_epoch_end
        self._due_at_epoch_end = (False, False)
        if topk:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        # After the top-k save, whose state (the new best) last.ckpt must hold. Not skipped because the top-k save
        # just marked this step as saved: that skip left last.ckpt one step behind at every epoch end (measured:
        # a 12-step run ended with last.ckpt at step 11 beside best-step=12.ckpt).
        if last and trainer.global_step != self._last_written_step:
            self._refresh_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and not trainer.sanity_checking and trainer.global_step != self._last_written_step:
            self._refresh_last(trainer)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step
            dead_rank.note_last_checkpoint(self.last_model_path, trainer.global_step)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # Writing last.ckpt must not mark the step as saved for the best-k logic: the validation that
        # ends this same step (e.g. max_steps on a validation step) would then skip its best checkpoint.
        previous = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = previous
