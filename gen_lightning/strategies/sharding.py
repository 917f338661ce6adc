"""Whether the strategy splits the parameters across ranks (DeepSpeed ZeRO-3, FSDP).

Then every forward pass is a collective: each rank gathers the others' shards layer by layer. A
callback that samples on rank 0 only (text or image samples) would leave rank 0 waiting forever for
ranks that never run that forward. Such callbacks ask this first and, when it is true, run the
forward on every rank (same seed, same result) and write on rank 0 only.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy


def parameters_are_sharded(trainer: L.Trainer) -> bool:
    strategy = trainer.strategy
    if trainer.world_size < 2:
        return False
    if isinstance(strategy, DeepSpeedStrategy):
        return isinstance(strategy.config, dict) and strategy.zero_stage_3
    return isinstance(strategy, FSDPStrategy)
