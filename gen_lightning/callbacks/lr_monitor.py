"""GenLearningRateMonitor: Lightning's LearningRateMonitor, on by default, silent when there is no logger.

Every run gets it from the CLI (`--lr_monitor.*`), so it must not break `--trainer.logger false`,
where Lightning's own callback refuses to start. Logs `lr-<Optimizer>` (and `-momentum` on request).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor


class GenLearningRateMonitor(LearningRateMonitor):
    def __init__(
        self,
        logging_interval: Optional[Literal["step", "epoch"]] = "step",
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        """
        Args:
            logging_interval: `step` logs every `trainer.log_every_n_steps`, whatever the schedulers'
                own interval (so a constant learning rate is on the dashboard too); `epoch` once per epoch.
        """
        super().__init__(logging_interval, log_momentum, log_weight_decay)
        self._active = True

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._active = bool(trainer.loggers)
        if self._active:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._active:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._active:
            super().on_train_epoch_start(trainer, *args, **kwargs)
