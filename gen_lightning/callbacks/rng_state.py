"""RNGState: every rank's random number generators travel with the checkpoint.

GAN noise, the VAE's reparameterisation noise and dropout all draw from the global generators
(torch, CUDA, numpy, python `random`), so a resumed run only repeats the uninterrupted one if those
generators continue from where they stood. Lightning saves none of them, hence this callback:

- A checkpoint stores the generators' state of every rank (gathered to rank 0, which writes the file), taken
  when the checkpoint is assembled: after the hooks of the batch it follows have run, so exactly where the
  uninterrupted run goes on from. During validation it is the state from before validation (see below).
  A resumed run puts each rank's generators back when training starts, after the sanity-check validation.
  (It used to be noted after every training batch: 0.04-0.2 ms a batch, for checkpoints written rarely.)
- Validation runs on a private copy of the generators: how often, or whether, a run validates
  (a resumed run does a sanity check; a preempted one may stop before its epoch-end validation)
  must not change the training noise that follows.

Numpy's state is stored as a tensor plus plain numbers so that `weights_only` loading accepts it.
"""

from __future__ import annotations

import random
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    # is_initialized() first: it is a flag, while is_available() asks the driver (~0.07 ms every step).
    if torch.cuda.is_initialized() and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(Callback):
    def __init__(self) -> None:
        self._to_restore: Optional[dict] = None  # this rank's generators from the loaded checkpoint
        self._before_validation: Optional[dict] = None

    @property
    def state_key(self) -> str:
        return "RNGState"

    # -- training ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is not None:
            restore_rng(self._to_restore)
            self._to_restore = None

    # -- validation does not disturb training's generators ------------------------------------
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._before_validation = capture_rng()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._before_validation is not None:
            restore_rng(self._before_validation)
            self._before_validation = None

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Inside validation the generators are validation's own: training goes on from the state before it.
        mine = self._before_validation or capture_rng()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank takes part in dump_checkpoint; only rank 0 writes the file, so it carries all.
            per_rank: list = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, mine)
        else:
            per_rank = [mine]
        return {"per_rank": per_rank}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        per_rank = state_dict.get("per_rank", [])
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        # A run resumed on another number of processes: ranks beyond the saved ones keep their seeds.
        self._to_restore = per_rank[rank] if rank < len(per_rank) else None
