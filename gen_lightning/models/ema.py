"""Exponential moving average of a network's weights, for sampling and evaluation.

GAN generators oscillate from step to step; an average of their recent weights gives steadier and
usually better samples (Karras et al. 2018, Yazici et al. 2019). torch's AveragedModel does the
bookkeeping: it holds a copy of the net, updates it with `update_parameters(net)` and keeps its
state (including the averaged batch-norm statistics) in the owner's state_dict, hence in checkpoints.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_copy(net: nn.Module, decay: float) -> AveragedModel:
    """A frozen copy of `net` whose `update_parameters(net)` does ema = decay * ema + (1 - decay) * net.

    The first update copies `net` as it is. Buffers (batch-norm running statistics) are averaged too,
    so the copy can run in eval mode on its own.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)  # never trained: only averaged
    return ema
