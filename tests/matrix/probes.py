"""Callbacks and patches the matrix driver loads into its runs (through `--trainer.callbacks+=...`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

POISON_ENV = "GEN_LIGHTNING_MATRIX_POISON_BATCH"


def batch_number(module: L.LightningModule) -> int:
    return module.trainer.fit_loop.epoch_loop._batches_that_stepped


def poisoned(loss: torch.Tensor, module: L.LightningModule) -> torch.Tensor:
    """NaN instead of the loss in the batch named by the environment (as after an overflow in the forward)."""
    bad = os.environ.get(POISON_ENV)
    return loss * float("nan") if bad is not None and batch_number(module) == int(bad) else loss


def install_poison() -> None:
    """Every loss of the poisoned batch becomes NaN: automatic optimization through training_step (the VAE,
    and the language models' shared base), the GAN's manual optimization through each of its optimizer steps."""
    from gen_lightning.models import GANModule, Seq2SeqModule, VAEModule
    from gen_lightning.models.language_model import LanguageModel

    for cls in (VAEModule, LanguageModel, Seq2SeqModule):
        step = cls.training_step

        def training_step(self, batch, batch_idx, _step=step):
            return poisoned(_step(self, batch, batch_idx), self)

        cls.training_step = training_step
    optimize = GANModule.optimize
    GANModule.optimize = lambda self, opt, loss: optimize(self, opt, poisoned(loss, self))


def full_state(module: L.LightningModule) -> dict[str, torch.Tensor]:
    """The trained parameters, whole on every rank (ZeRO-3 keeps shards): a collective, every rank calls it."""
    from gen_lightning.strategies.sharding import full_parameters

    with full_parameters(module):
        return {k: v.detach().float().cpu().clone() for k, v in module.named_parameters()
                if not k.startswith("generator_ema.")}  # an average of G, moved by the EMA update, not a step


class BadBatchProbe(Callback):
    """Records by how much the parameters moved during the poisoned batch, and the steps the guard skipped."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._before = None
        self._result: dict = {"max_change": None}

    def _is_bad(self, pl_module) -> bool:
        return os.environ.get(POISON_ENV) is not None and batch_number(pl_module) == int(os.environ[POISON_ENV])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._is_bad(pl_module):
            self._before = full_state(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._is_bad(pl_module):
            after = full_state(pl_module)
            self._result = {"max_change": max((after[k] - self._before[k]).abs().max().item() for k in after),
                            "batch": batch_number(pl_module)}

    def on_train_end(self, trainer, pl_module) -> None:
        # Read at the end: the guard may count an engine's skipped update in its own on_train_batch_end, after this.
        skipped = trainer.callback_metrics.get("train/skipped_steps")
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps({**self._result, "skipped": None if skipped is None else float(skipped),
                                                   "global_step": trainer.global_step}))


class MetricsDump(Callback):
    """The validation metrics of a `validate` run, as JSON (rank 0)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            Path(self.path).write_text(json.dumps(metrics))
