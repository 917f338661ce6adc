"""The one step counter everything a run logs is put on.

Lightning's `self.log` writes metrics at `fit_loop.epoch_loop._batches_that_stepped` (one per training
batch that ended in an optimizer step, whatever the number of optimizers), and its W&B logger plots
every chart against that value (`trainer/global_step`). `trainer.global_step` counts optimizer steps
instead: the same for one optimizer, but a GAN advances it by n_critic + 1 per batch, so media logged
with it landed at twice (or more) the step of the losses logged at the same moment. Callbacks that
log through a logger directly (image grids, text tables) use this counter too.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
from lightning.pytorch.trainer.states import RunningStage

# Kept on the logger connector: ((the values Lightning's answer depends on in training), the answer).
_MEMO = "_gen_lightning_logs_this_step"


def logging_step(trainer: L.Trainer, training_ended: bool = False) -> int:
    """The step at which `self.log` in the current training batch lands on the loggers; with
    `training_ended` (from on_train_end, after the loop counted the last batch), that of the last batch."""
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    return max(step - 1, 0) if training_ended else step


def logs_this_step(trainer: Optional[L.Trainer]) -> bool:
    """Whether this training batch's on_step values reach the loggers (every `log_every_n_steps`, and the last).

    It is also when gen-lightning reads values on the host. Anything else in a training step stays on the
    device, so the host can queue the next step's kernels while the GPU works: the progress bar reads its values,
    and the callbacks read, reduce and synchronise, on these steps only (Lightning drops the on_step values of
    the other batches anyway). tests/test_conformance.py counts the syncs of the other steps: 0."""
    connector = getattr(trainer, "_logger_connector", None)  # None: a module called outside a Trainer
    if connector is None:
        return True
    if trainer.state.stage is not RunningStage.TRAINING:
        return bool(connector.should_update_logs)
    # Lightning's `should_update_logs` is ~25 Python calls (`trainer._active_loop`, an enum compare that lower()s both
    # sides, ...) and five hooks of every training batch ask it (the module, the progress bar, three callbacks). In
    # training it reads nothing but these three values, so it is asked again only when one of them changes: a callback
    # that sets `trainer.should_stop` mid-batch flips it at once, as in Lightning. tests/test_logging_step.py checks the
    # two agree at every hook of a run.
    key = (trainer.fit_loop.epoch_loop._batches_that_stepped, trainer.should_stop, trainer.log_every_n_steps)
    memo = connector.__dict__.get(_MEMO)
    if memo is None or memo[0] != key:
        memo = connector.__dict__[_MEMO] = (key, bool(connector.should_update_logs))
    return memo[1]


def log_to_loggers(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Host floats straight to every logger, at the step of the losses `self.log` writes in this batch, as Lightning's
    own LearningRateMonitor and ThroughputMonitor do: `self.log` would wrap each value in a tensor metric (~0.4 ms per
    value on every logging step) for callback_metrics, which nothing monitors for these."""
    for logger in trainer.loggers if metrics else ():
        logger.log_metrics(metrics, step=logging_step(trainer))
