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
        return {
            k: v.detach().float().cpu().clone()
            for k, v in module.named_parameters()
            if not k.startswith("generator_ema.")
        }  # an average of G, moved by the EMA update, not a step


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
            self._result = {
                "max_change": max((after[k] - self._before[k]).abs().max().item() for k in after),
                "batch": batch_number(pl_module),
            }

    def on_train_end(self, trainer, pl_module) -> None:
        # Read at the end: the guard may count an engine's skipped update in its own on_train_batch_end, after this.
        skipped = trainer.callback_metrics.get("train/skipped_steps")
        if trainer.is_global_zero:
            Path(self.path).write_text(
                json.dumps(
                    {
                        **self._result,
                        "skipped": None if skipped is None else float(skipped),
                        "global_step": trainer.global_step,
                    }
                )
            )


class MetricsDump(Callback):
    """The validation metrics of a `validate` run, as JSON (rank 0)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            Path(self.path).write_text(json.dumps(metrics))


# -- host-device synchronisation per training step ---------------------------------------------------------------
# What stops a CPU from queueing the next step's kernels on a GPU: reading a tensor's value on the host, waiting
# for the device, or a collective issued from Python. On CPU nothing waits, so the calls are counted instead.
SYNCING_TENSOR_METHODS = ("item", "__bool__", "tolist", "cpu")
SYNCING_COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter_tensor",
    "barrier",
    "gather",
    "scatter",
)
# The data pipeline works on host tensors by design (a sampler's tolist, a transform's item): not a device sync.
HOST_ONLY_CODE = ("/torch/utils/data/", "/torchdata/")
# DeepSpeed's ZeRO optimizer reads its gradient norm on the host in every step (its overflow check, `step` ->
# `is_invalid_grad_norm`) and reduces gradients from Python: the engine's own, kept apart as `engine_syncs`.
ENGINE_CODE = ("/deepspeed/",)
# torch's optimizers keep their step counters on the host (`state["step"]` is a CPU tensor unless `capturable`), so
# their own `.item()` reads no device memory either (only the direct caller counts: a closure runs inside `step`).
HOST_ONLY_CALLERS = ("/torch/optim/",)
_counting: dict = {"on": False, "calls": [], "engine": []}


def _counted(name: str, original):
    def wrapper(*args, **kwargs):
        if _counting["on"]:
            import traceback

            stack = traceback.extract_stack()[:-1]
            host_only = any(marker in frame.filename for frame in stack for marker in HOST_ONLY_CODE) or any(
                marker in stack[-1].filename for marker in HOST_ONLY_CALLERS
            )
            if not host_only:
                _counting["on"] = False  # the sync's own calls (a collective's tensors) are not counted again
                try:
                    frames = [
                        f"{f.filename.split('/site-packages/')[-1].split('/work/main/')[-1]}:{f.lineno} {f.name}"
                        for f in reversed(stack)
                        if "/tests/matrix/" not in f.filename
                    ]
                    where = " < ".join(frames[:6])
                    engine = any(marker in frame.filename for frame in stack for marker in ENGINE_CODE)
                    _counting["engine" if engine else "calls"].append(f"{name} at {where}")
                finally:
                    _counting["on"] = True
        return original(*args, **kwargs)

    return wrapper


def install_sync_counter() -> None:
    """Wrap every syncing call once per process; SyncCounter switches the counting on and off."""
    import torch.distributed as dist

    if getattr(torch.Tensor.item, "_counted", False):
        return
    for name in SYNCING_TENSOR_METHODS:
        wrapper = _counted(f"Tensor.{name}", getattr(torch.Tensor, name))
        wrapper._counted = True
        setattr(torch.Tensor, name, wrapper)
    torch.cuda.synchronize = _counted("torch.cuda.synchronize", torch.cuda.synchronize)
    for name in SYNCING_COLLECTIVES:
        if hasattr(dist, name):
            setattr(dist, name, _counted(f"dist.{name}", getattr(dist, name)))


class SyncCounter(Callback):
    """Counts syncing calls from one training batch's start to the next one's, and what else that batch did:
    logged (Lightning's should_update_logs, or a W&B write), validated, wrote a checkpoint (and, for the record,
    ended an epoch). A batch that did none of the first three must count 0 (issue 15: synchronise only on steps
    that log), epoch ends included."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.batches: list[dict] = []

    def _close(self) -> None:
        _counting["on"] = False
        if self.batches:
            self.batches[-1]["syncs"] = list(_counting["calls"])
            self.batches[-1]["engine_syncs"] = len(_counting["engine"])
        _counting["calls"], _counting["engine"] = [], []

    def on_train_start(self, trainer, pl_module) -> None:
        install_sync_counter()
        import wandb

        log = wandb.sdk.wandb_run.Run.log
        probe = self

        def counted_log(run, *args, **kwargs):
            if probe.batches:
                probe.batches[-1]["wandb"] = True
            return log(run, *args, **kwargs)

        if not getattr(log, "_probe", False):
            counted_log._probe = True
            wandb.sdk.wandb_run.Run.log = counted_log

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._close()
        self.batches.append(
            {
                "batch": len(self.batches),
                "logs": False,
                "wandb": False,
                "validates": False,
                "saves": False,
                "epoch_end": False,
            }
        )
        _counting["on"] = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.batches:
            self.batches[-1]["logs"] = bool(trainer._logger_connector.should_update_logs)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.batches:
            self.batches[-1]["validates"] = True

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.batches:
            self.batches[-1]["saves"] = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.batches:
            self.batches[-1]["epoch_end"] = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()
        self.batches[-1]["epoch_end"] = True  # the end of training: its own saves and logs
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        Path(f"{self.path}.rank{rank}").write_text(json.dumps(self.batches, indent=1))


def quiet_batches(batches: list[dict]) -> list[dict]:
    """The batches that neither logged nor validated nor saved a checkpoint."""
    return [b for b in batches if not (b["logs"] or b["wandb"] or b["validates"] or b["saves"])]
