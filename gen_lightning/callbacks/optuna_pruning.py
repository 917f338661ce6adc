"""OptunaPruning: a sweep trial's link to its Optuna study, from inside the trial's own run.

`gen-lightning sweep` starts every trial as its own `gen-lightning fit` with this callback appended and
the study's storage, name and the trial number in environment variables (which DDP ranks inherit).
At each validation end rank 0 reports the sweep's metric to the trial (step = validations so far: the
"iteration" of W&B's hyperband) and asks the study's pruner; every rank gets the answer by broadcast.
A pruned run stops the way a run reaching max_epochs does: Lightning finishes the step, the checkpoint
callback writes last.ckpt, summary.json and the W&B run are complete, and they say so: the trial's user
attr `pruned` (validation, step, value), the W&B summary `sweep/state` = pruned and a `pruned` tag.
Complete and failed runs get their `sweep/state` too; the W&B config gets `sweep` (name, trial, params).

Outside a sweep (no environment variables) the callback does nothing. Optuna's own Lightning callback
(optuna-integration's PyTorchLightningPruningCallback) raises TrialPruned inside the validation loop
instead: the run ends in an exception, its last checkpoint and W&B summary unwritten.
"""

from __future__ import annotations

import os
import signal
import sys

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

STORAGE_ENV = "GEN_LIGHTNING_SWEEP_STORAGE"
STUDY_ENV = "GEN_LIGHTNING_SWEEP_STUDY"
TRIAL_ENV = "GEN_LIGHTNING_SWEEP_TRIAL"
PRUNED_ATTR = "pruned"
STATE_KEY = "sweep/state"


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM when the worker dies (kill -9, OOM killer): no orphan trains on."""
    if sys.platform == "linux":
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class OptunaPruning(Callback):
    def __init__(self) -> None:
        self.in_sweep = all(k in os.environ for k in (STORAGE_ENV, STUDY_ENV, TRIAL_ENV))
        if self.in_sweep:
            _die_with_parent()
        self._trial = None  # optuna.Trial, rank 0 only
        self._params: dict = {}
        self._metric: str | None = None
        self._validations = 0
        self._stopped: str | None = None  # "pruned" | "orphaned"
        self._warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.in_sweep or stage != "fit" or not trainer.is_global_zero:
            return
        import optuna

        from gen_lightning.sweeps.storage import study_for_trial_process

        study, fingerprint = study_for_trial_process(os.environ[STORAGE_ENV], os.environ[STUDY_ENV])
        number = int(os.environ[TRIAL_ENV])
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        # The live handle of a trial the worker asked for: what study.ask builds, for an existing trial id.
        self._trial = optuna.trial.Trial(study, frozen._trial_id)
        self._params = dict(frozen.params)
        self._metric = fingerprint["metric"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._trial is None:
            return
        for run in self._wandb_runs(trainer):
            run.config.update(
                {"sweep": {"study": self._trial.study.study_name, "trial": self._trial.number, "params": self._params}},
                allow_val_change=True,
            )
        self._mark(trainer, "running")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.in_sweep or trainer.sanity_checking or self._stopped:
            return
        decision = self._report(trainer) if trainer.is_global_zero else None
        decision = trainer.strategy.broadcast(decision, src=0)  # every rank stops at the same step
        if decision is None:
            return
        trainer.should_stop = True
        self._stopped = decision
        if decision == "pruned" and self._trial is not None:
            value = float(trainer.callback_metrics[self._metric])
            self._trial.set_user_attr(
                PRUNED_ATTR, {"validation": self._validations, "global_step": trainer.global_step, "value": value}
            )
            for run in self._wandb_runs(trainer):
                run.summary["sweep/pruned_at_validation"] = self._validations
                run.tags = (*run.tags, "pruned")
            self._mark(trainer, "pruned")
            rank_zero_info(
                f"sweep: trial {self._trial.number} pruned at validation {self._validations} "
                f"({self._metric}={value:.4g}, step {trainer.global_step}): stopping"
            )

    def _report(self, trainer: L.Trainer) -> str | None:
        import optuna

        value = trainer.callback_metrics.get(self._metric)
        if value is None:
            if not self._warned:
                rank_zero_warn(f"sweep: the run logs no {self._metric} at validation; the pruner cannot judge it")
                self._warned = True
            return None
        self._validations += 1
        try:
            self._trial.report(float(value), step=self._validations)
            return "pruned" if self._trial.should_prune() else None
        except optuna.exceptions.UpdateFinishedTrialError:  # its worker is gone and the trial was failed
            rank_zero_info(f"sweep: the study has closed trial {self._trial.number} (its worker stopped): stopping")
            return "orphaned"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._trial is not None and self._stopped != "pruned":
            self._mark(trainer, "orphaned" if self._stopped else "complete")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._trial is not None:
            self._mark(
                trainer, "interrupted" if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) else "failed"
            )

    def _mark(self, trainer: L.Trainer, state: str) -> None:
        for run in self._wandb_runs(trainer):
            run.summary[STATE_KEY] = state

    @staticmethod
    def _wandb_runs(trainer: L.Trainer) -> list:
        return [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)]
