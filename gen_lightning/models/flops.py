"""FLOPs of one training batch, measured by running the family's own step on the meta device.

Lightning's `measure_flops` (torch's FlopCounterMode) counts the FLOPs of the operations a forward and its
backward run -- matmuls, convolutions, attention -- with tensors that have shapes but no data, so a GPT-2 XL
costs no memory and no time to count. Each family builds a twin of itself on the meta device from its own
hyper-parameters and runs its real loss there: n_critic discriminator steps and penalties for a GAN, the
ELBO for a VAE. The throughput callback turns the number into FLOPs/s and, where the device's peak is
known (Lightning's table of GPUs), into MFU. GPT also has nanoGPT's analytic count; a test checks both agree.
"""

from __future__ import annotations

from typing import Callable, Optional

import lightning as L
import torch
from lightning.fabric.utilities.throughput import measure_flops


def meta_twin(module: L.LightningModule) -> L.LightningModule:
    """The same LightningModule class and hyper-parameters, built on the meta device (no weights, no memory).
    Rebuilt rather than copied: a copy would first duplicate the real weights, which may be sharded."""
    hparams = {k: v for k, v in module.hparams.items() if not str(k).startswith("_")}
    with torch.device("meta"):
        return type(module)(**hparams)


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """A meta tensor of `t`'s shape and dtype."""
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def count(
    model: torch.nn.Module,
    forward: Callable[[], torch.Tensor],
    loss: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> int:
    """FLOPs of `forward()` and, with `loss`, of the backward of loss(forward())."""
    return int(measure_flops(model, forward, loss))
