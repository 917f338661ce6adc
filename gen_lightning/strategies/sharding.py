"""Whether the strategy splits the parameters across ranks (DeepSpeed ZeRO-3, FSDP).

Then every forward pass is a collective: each rank gathers the others' shards layer by layer. A
callback that samples on rank 0 only (text or image samples) would leave rank 0 waiting forever for
ranks that never run that forward. Such callbacks ask this first and, when it is true, run the
forward on every rank (same seed, same result) and write on rank 0 only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import lightning as L
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from torch import nn


def parameters_are_sharded(trainer: L.Trainer) -> bool:
    strategy = trainer.strategy
    if trainer.world_size < 2:
        return False
    if isinstance(strategy, DeepSpeedStrategy):
        return isinstance(strategy.config, dict) and strategy.zero_stage_3
    return isinstance(strategy, FSDPStrategy)


@contextmanager
def full_parameters(net: nn.Module) -> Iterator[None]:
    """Within it, `net`'s parameters are whole on every rank, also under DeepSpeed ZeRO-3 (which otherwise
    keeps one shard per rank and gathers a layer only around its forward); read-only: changes are dropped."""
    params = [p for p in net.parameters() if hasattr(p, "ds_id")]  # the mark ZeRO-3 puts on what it partitions
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params):
        yield
