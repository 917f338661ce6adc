"""GenThroughput: training speed on the dashboard, in samples/s and, for token batches, tokens/s.

The windowed arithmetic is Lightning's (`lightning.fabric.utilities.throughput.Throughput`). Lightning's
ThroughputMonitor callback is not used as is because it needs a Python function for the batch size
(a CLI config cannot hold one), warns on every model without `flops_per_batch`, and logs validation
speed with the validation batch index as the step, which bends W&B's step axis. Here: training only,
timed wall-clock from batch to batch (data loading included, validation pauses excluded), logged
to the loggers at the step of the losses logged in the same batch (callbacks/logging_step.py).

The clock is read (after `torch.cuda.synchronize()` on a GPU) on logging steps only, the steps where the host
waits for the device anyway (callbacks/logging_step.py): a sync per batch would stop the host from queueing the
next step's kernels. Rates are averaged over the logging intervals that span about `window_size` batches.

Logged (every `trainer.log_every_n_steps`, once the window is full: from the logging step that closes the first
`window_size` batches, at the earliest the second; measured: window 20, logging every 5 -> first at step 24):
  throughput/samples_per_sec         all ranks together
  throughput/tokens_per_sec          all ranks together, when batches are integer token windows [B, T]
  throughput/device/samples_per_sec  this rank (the same on every rank under DDP)
  throughput/flops_per_sec           model FLOPs per second, all ranks together, for modules that count their
  throughput/device/flops_per_sec    FLOPs (`flops_per_batch(batch)`, capabilities.ReportsFlops: every family)
  throughput/device/mfu              model FLOPs utilisation, where Lightning knows the device's peak FLOPs
                                     (CUDA GPUs, TPUs); on a CPU it is not logged, which is said once
"""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype  # bf16 vs fp32 peak
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from gen_lightning.callbacks.logging_step import log_to_loggers, logs_this_step
from gen_lightning.capabilities import ReportsFlops, implements


def batch_tensor(batch: Any) -> Optional[torch.Tensor]:
    """The input tensor of a batch: images of `(images, labels)`, x of `(x, y)`, or the batch itself."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        return next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
    return None


def _shape_key(batch: Any) -> tuple:
    if isinstance(batch, torch.Tensor):
        return (tuple(batch.shape), batch.dtype)
    if isinstance(batch, (list, tuple)):
        return tuple(_shape_key(b) for b in batch)
    if isinstance(batch, dict):
        return tuple((k, _shape_key(v)) for k, v in sorted(batch.items()))
    return (type(batch).__name__,)


def is_token_batch(x: torch.Tensor) -> bool:
    return x.dim() == 2 and not torch.is_floating_point(x)


class GenThroughput(Callback):
    def __init__(self, window_size: int = 20) -> None:
        """
        Args:
            window_size: batches the speed is averaged over (at least 2; rounded to whole logging intervals).
        """
        if window_size < 2:
            from gen_lightning.errors import UserError

            raise UserError(f"throughput.window_size must be >= 2, got {window_size}")
        self.window_size = window_size
        self._throughput: Optional[Throughput] = None
        self._validation_began: Optional[float] = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        # One update per logging step: a window of that many updates spans about `window_size` batches.
        updates = max(2, round(self.window_size / max(trainer.log_every_n_steps, 1)) + 1)
        self._throughput = Throughput(
            available_flops=get_available_flops(trainer.strategy.root_device, dtype),
            world_size=trainer.world_size,
            window_size=updates,
        )
        self._start = time.perf_counter()
        self._paused = 0.0  # seconds spent in validation inside the training loop
        self._batches = self._samples = self._tokens = 0
        self._flops_since_update = 0
        self._flops: dict[tuple, int] = {}  # per batch shape: counted once, on the meta device
        if isinstance(pl_module, ReportsFlops) and self._throughput.available_flops is None:
            rank_zero_info(
                f"throughput: MFU is not logged: the peak FLOPs of this device "
                f"({trainer.strategy.root_device.type}) are unknown to Lightning; FLOPs/s are logged"
            )

    def _batch_flops(self, pl_module: L.LightningModule, batch: Any, x: torch.Tensor) -> int:
        """This rank's FLOPs for a batch like this one; 0 for a module that does not count them."""
        if not implements(pl_module, ReportsFlops):
            return 0
        key = _shape_key(batch)
        if key not in self._flops:  # a last, smaller batch (no drop_last) gets its own count
            self._flops[key] = int(pl_module.flops_per_batch(batch))
        return self._flops[key]

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_began = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The sanity check runs before on_train_start, which resets the pause total anyway.
        if self._throughput is not None and self._validation_began is not None:
            self._paused += time.perf_counter() - self._validation_began

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        x = batch_tensor(batch)
        if self._throughput is None or x is None:
            return
        self._batches += 1
        self._samples += x.shape[0]
        tokens = is_token_batch(x)
        self._tokens += x.numel() if tokens else 0
        self._flops_since_update += self._batch_flops(pl_module, batch, x)  # this device's; Throughput sums ranks
        # Lightning drops on_step values of batches it does not write to the logger; computing and
        # `self.log`-ing them anyway cost ~2.5 ms per step on the nano GPT (benchmarks/README.md), and
        # reading the clock right needs a device sync. LearningRateMonitor decides with the same flag.
        if not logs_this_step(trainer):
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # time the work, not the kernel launches
        self._throughput.update(
            time=time.perf_counter() - self._start - self._paused,
            batches=self._batches,
            samples=self._samples,
            lengths=self._tokens if tokens else None,
            flops=self._flops_since_update or None,
        )
        self._flops_since_update = 0
        metrics = self._throughput.compute()
        world = trainer.world_size
        logged = {}
        if "device/samples_per_sec" in metrics:
            logged["throughput/device/samples_per_sec"] = metrics["device/samples_per_sec"]
            logged["throughput/samples_per_sec"] = metrics["device/samples_per_sec"] * world
        if "device/items_per_sec" in metrics:
            logged["throughput/tokens_per_sec"] = metrics["device/items_per_sec"] * world
        if "device/flops_per_sec" in metrics:
            logged["throughput/device/flops_per_sec"] = metrics["device/flops_per_sec"]
            logged["throughput/flops_per_sec"] = metrics["device/flops_per_sec"] * world
        if "device/mfu" in metrics:
            logged["throughput/device/mfu"] = metrics["device/mfu"]
        log_to_loggers(trainer, logged)  # not self.log: 4-5 values were ~1.5 ms per logging step (DCGAN)
