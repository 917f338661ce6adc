"""logs_this_step: gen-lightning's "does this batch log?" is Lightning's `should_update_logs`, asked once per change.

Lightning's answer costs ~25 Python calls and five hooks of every training batch ask it, so in training
logs_this_step keeps it until the step counter, `trainer.should_stop` or `log_every_n_steps` changes. These tests
hold it to Lightning's answer at every hook of a run, a stop requested in the middle of a batch included.
"""

from __future__ import annotations

import sys
from unittest import mock

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

from gen_lightning.callbacks.logging_step import logs_this_step
from tests.helpers import tiny_trainer

HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step")


class AsksAtEveryHook(Callback):
    """Records (hook, batch, logs_this_step, Lightning's should_update_logs) at each hook; in batch `stop_in` it sets
    `trainer.should_stop` after the backward, as a callback that stops a run may."""

    def __init__(self, stop_in: int) -> None:
        self.stop_in, self.answers = stop_in, []

    def _ask(self, trainer, hook: str, batch_idx: int) -> None:
        ours = logs_this_step(trainer)
        self.answers.append((hook, batch_idx, ours, bool(trainer._logger_connector.should_update_logs)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._ask(trainer, "on_train_batch_start", batch_idx)

    def on_before_backward(self, trainer, pl_module, loss):
        self._ask(trainer, "on_before_backward", trainer.fit_loop.epoch_loop.batch_idx)

    def on_after_backward(self, trainer, pl_module):
        self._ask(trainer, "on_after_backward", trainer.fit_loop.epoch_loop.batch_idx)
        if trainer.fit_loop.epoch_loop.batch_idx == self.stop_in:
            trainer.should_stop = True

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._ask(trainer, "on_before_optimizer_step", trainer.fit_loop.epoch_loop.batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._ask(trainer, "on_train_batch_end", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._ask(trainer, "on_validation_batch_end", batch_idx)


def test_it_is_lightnings_answer_at_every_hook(tmp_path):
    asks = AsksAtEveryHook(stop_in=7)  # batch 7 is step 8: not a multiple of 3, so only the stop makes it log
    tiny_trainer(tmp_path, max_steps=50, callbacks=[asks], log_every_n_steps=3).fit(BoringModel())
    disagreements = [answer for answer in asks.answers if answer[2] != answer[3]]
    assert disagreements == []
    by_hook = {(hook, batch): ours for hook, batch, ours, _ in asks.answers if hook != "on_validation_batch_end"}
    log_steps = [batch for batch in range(7) if by_hook[("on_train_batch_start", batch)]]
    assert log_steps == [2, 5]  # steps 3 and 6
    # The stop comes after the backward of batch 7: the hooks before it did not log, those after it do.
    assert [by_hook[(hook, 7)] for hook in (*HOOKS, "on_train_batch_end")] == [False, False, False, True, True]
    assert max(batch for _, batch in by_hook) == 7  # the stop ended the run there
    assert any(hook == "on_validation_batch_end" for hook, *_ in asks.answers)  # Lightning's own path, and agreed


class ChangesThePeriod(AsksAtEveryHook):
    """Asks at every hook, and sets `trainer.log_every_n_steps` at the start of some batches: {batch: period}."""

    def __init__(self, periods: dict[int, int]) -> None:
        super().__init__(stop_in=-1)
        self.periods = periods

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)  # asked before the change, then after
        if batch_idx in self.periods:
            trainer.log_every_n_steps = self.periods[batch_idx]
            self._ask(trainer, "on_train_batch_start", batch_idx)


def test_a_new_logging_period_is_seen_at_once(tmp_path):
    asks = ChangesThePeriod({4: 2, 9: 0})  # 0: Lightning never logs on_step values then
    tiny_trainer(tmp_path, max_steps=12, callbacks=[asks], log_every_n_steps=5).fit(BoringModel())
    assert [answer for answer in asks.answers if answer[2] != answer[3]] == []
    logged = sorted({batch for hook, batch, ours, _ in asks.answers if hook == "on_train_batch_end" and ours})
    assert logged == [5, 7]  # steps 6 and 8 with period 2; none from batch 9 on
    # Batch 4 is step 5: a logging step with period 5, asked before the change, and not one with period 2, after it.
    assert [ours for hook, batch, ours, _ in asks.answers if (hook, batch) == ("on_train_batch_start", 4)] == [
        True,
        False,
    ]


class AsksFiveTimes(Callback):
    def _ask(self, trainer, *args, **kwargs):
        logs_this_step(trainer)

    on_train_batch_start = on_before_backward = on_after_backward = on_before_optimizer_step = _ask
    on_train_batch_end = _ask


def test_lightning_is_asked_once_a_batch(tmp_path):
    asked = []
    lightnings = _LoggerConnector.should_update_logs.fget

    def counted(connector):
        if sys._getframe(1).f_code.co_name == "logs_this_step":
            asked.append(connector.trainer.fit_loop.epoch_loop._batches_that_stepped)
        return lightnings(connector)

    with mock.patch.object(_LoggerConnector, "should_update_logs", property(counted)):
        tiny_trainer(tmp_path, max_steps=6, callbacks=[AsksFiveTimes()], log_every_n_steps=2).fit(BoringModel())
    # Five questions per batch, one of them reaching Lightning (the loop counts the batch after on_train_batch_end).
    assert asked == [0, 1, 2, 3, 4, 5]
