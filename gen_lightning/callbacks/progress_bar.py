"""GenProgressBar: Lightning's RichProgressBar, with what a run bounded by steps needs.

Lightning's bar counts the batches of the current epoch and titles it `Epoch e/max_epochs - 1`: a run bounded by
`trainer.max_steps` (the GPT configs: max_epochs unset, -1) showed `Epoch 0/-2`, and its rate column, rich's own
speed estimate, shows 0.00it/s until two updates fall in its 30 s window (a slow step never gets one). Here:
  - bounded by max_steps (and not by max_epochs): one bar over the whole run, `Step n/max_steps`, counting
    optimizer steps (a GAN's n_critic + 1 per batch), the same bar through epoch boundaries;
  - the rate is the bar's progress since it started divided by the time since then (steps/s or batches/s);
  - the W&B run id (`v_num`) is not repeated on every refresh: the run folder is printed once at the start;
  - the training values a module names (`progress_bar_values`, capabilities.ShowsOnProgressBar) are read from
    its logged values (`.item()`, a host-device sync) on logging steps only and shown until the next one
    (callbacks/logging_step.py); the bar itself still moves every batch.
The CLI adds it whenever the progress bar is on and no other progress bar callback is configured.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich.progress import ProgressColumn
from rich.text import Text

from gen_lightning.callbacks.logging_step import logs_this_step
from gen_lightning.capabilities import ShowsOnProgressBar


class _RateColumn(ProgressColumn):
    """Progress since the task started, per second of wall time (steps/s or it/s)."""

    def __init__(self, unit: str, style) -> None:
        super().__init__()
        self.unit, self.style = unit, style

    def render(self, task) -> Text:
        origin, began = task.fields.get("origin", 0), task.fields.get("began")
        rate = None
        if began is not None and time.monotonic() > began:
            rate = (task.completed - origin) / (time.monotonic() - began)
        return Text(f"{rate:.2f}{self.unit}" if rate is not None else f"-{self.unit}", style=self.style)


class GenProgressBar(RichProgressBar):
    _shown_metrics: Optional[dict] = None  # the values on the bar, read at the latest logging step

    def _bounded_by_steps(self, trainer: Optional[L.Trainer] = None) -> bool:
        trainer = trainer or self.trainer
        return trainer.max_steps > 0 and trainer.max_epochs in (None, -1)

    def configure_columns(self, trainer: L.Trainer) -> list:
        columns = super().configure_columns(trainer)
        unit = "steps/s" if self._bounded_by_steps(trainer) else "it/s"
        return [*columns[:-1], _RateColumn(unit, style=self.theme.processing_speed)]  # the last is rich's speed

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if self._bounded_by_steps() else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self._bounded_by_steps():
            return "Step"
        return super()._get_train_description(current_epoch)

    def _add_task(self, total_batches, description: str, visible: bool = True):
        task = super()._add_task(total_batches, description, visible)
        self._mark_start(task, self.trainer.global_step if self._bounded_by_steps() and description == "Step" else 0)
        return task

    def _mark_start(self, task, origin: int) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, origin=origin, began=time.monotonic(), completed=origin)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bounded_by_steps(trainer) and self.train_progress_bar_id is not None:
            return  # one bar over the whole run: not reset at each epoch
        super().on_train_epoch_start(trainer, pl_module)
        if not self._bounded_by_steps(trainer):
            self._mark_start(self.train_progress_bar_id, 0)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._bounded_by_steps(trainer):
            self._update(self.train_progress_bar_id, trainer.global_step)
            self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        if trainer.training and self._shown_metrics is not None and not logs_this_step(trainer):
            return self._shown_metrics
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the run folder is printed once instead (callbacks/config_saver.py)
        if trainer.training and isinstance(pl_module, ShowsOnProgressBar):
            logged = trainer.callback_metrics
            shown = {name: float(logged[key]) for name, key in pl_module.progress_bar_values.items() if key in logged}
            metrics = {**shown, **metrics}
        self._shown_metrics = metrics
        return metrics
