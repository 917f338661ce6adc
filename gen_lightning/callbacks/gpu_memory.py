"""GPUMemory: PyTorch's own view of GPU memory, logged beside the losses; nothing on CPU.

W&B's system panel already samples the whole GPU (nvidia-smi's view, every few seconds). What it
cannot see is PyTorch's allocator: how much the tensors really use, the peak since the start, and
how much the caching allocator holds. Those tell whether a bigger batch fits. Lightning's
DeviceStatsMonitor logs ~80 allocator counters per device; three answer the question.

Logged (GiB, every `trainer.log_every_n_steps`, rank 0's device):
  gpu/memory_allocated   tensors alive now
  gpu/max_allocated      peak since training started
  gpu/memory_reserved    held by the caching allocator (what nvidia-smi shows for this process)
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from gen_lightning.callbacks.logging_step import log_to_loggers, logs_this_step

GIB = 1024**3


class GPUMemory(Callback):
    _device: Optional[torch.device] = None  # the CUDA device of the run in progress; None on other devices

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Read once per run: `trainer.strategy.root_device` is a chain of properties, ~15 us right after a backward.
        device = trainer.strategy.root_device
        self._device = device if device.type == "cuda" else None
        if self._device is not None:
            torch.cuda.reset_peak_memory_stats(device)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        device = self._device
        if device is None or not logs_this_step(trainer):
            return
        # Reading the allocator's counters costs no synchronisation.
        log_to_loggers(
            trainer,
            {
                "gpu/memory_allocated": torch.cuda.memory_allocated(device) / GIB,
                "gpu/max_allocated": torch.cuda.max_memory_allocated(device) / GIB,
                "gpu/memory_reserved": torch.cuda.memory_reserved(device) / GIB,
            },
        )
