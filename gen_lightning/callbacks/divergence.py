"""DivergenceGuard: a NaN/Inf loss or gradient never reaches the weights.

Checked just before every optimizer step (`on_before_optimizer_step`, which Lightning calls for
automatic and manual optimization alike, so GAN generator and critic steps are covered too): the
loss of the step (seen in `on_before_backward`) and the gradients of the optimizer's parameters.

- `skip_bad_steps: 0` (default): the run stops with one line naming the step and the loss. The bad
  update is never applied and no checkpoint is written after it, so `last.ckpt` holds the last good
  weights and loads as usual.
- `skip_bad_steps: N`: the bad step's gradients are dropped (`p.grad = None`, which torch optimizers
  treat as "no update" for that parameter: no momentum move, no Adam step count), training goes on;
  more than N bad steps in a row still stop the run. For automatic optimization this is the same
  as a training_step returning None; for a GAN it skips just the optimizer whose step went bad.

Under DeepSpeed (ZeRO 1-3) the engine itself checks the gradient norm before every update and skips an
update with inf/NaN gradients (`engine.skipped_steps`); the optimizer's parameters are ZeRO's flat
partitions, whose `.grad` is empty here. So the loss is checked before the step as above, and the steps
the engines skipped are read at the end of each batch (the strategy's `skipped_steps()`, capabilities.
SkipsNonFiniteSteps): stop (the weights are those before the bad step) or count them, as above.

Under DDP the decision is taken together (any rank bad = all skip or all stop): gradients are
already averaged, but a loss is per rank, and ranks that disagree would hang in the next collective.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from gen_lightning.capabilities import SkipsNonFiniteSteps
from gen_lightning.errors import UserError


def grads_finite(grads: list[torch.Tensor]) -> torch.Tensor:
    """True when every gradient is finite, as a 0-d bool tensor (no host sync here).
    One total norm (a fused foreach kernel where the device has one) is finite exactly when every entry
    is, except that a huge but finite gradient can overflow it: only then check tensor by tensor.
    Measured on the nano GPT (52 tensors, CPU): 0.46 ms vs 4.2 ms for isfinite().all() per tensor."""
    if not grads:
        return torch.tensor(True)
    finite = torch.isfinite(torch.nn.utils.get_total_norm(grads))
    if bool(finite):
        return finite
    return torch.stack([torch.isfinite(g).all() for g in grads]).all()


class TrainingDiverged(UserError):
    """The loss or the gradients became NaN/Inf: a setting to change (learning rate), not a bug."""


class DivergenceGuard(Callback):
    def __init__(self, skip_bad_steps: int = 0) -> None:
        """
        Args:
            skip_bad_steps: 0 = stop at the first non-finite loss/gradient; N = drop such steps,
                stopping only after more than N bad steps in a row.
        """
        if skip_bad_steps < 0:
            raise UserError(f"divergence.skip_bad_steps must be >= 0, got {skip_bad_steps}")
        self.skip_bad_steps = skip_bad_steps
        self.bad_in_a_row = 0
        self.skipped_total = 0
        self._loss: Optional[torch.Tensor] = None
        self._engine_skips = 0  # the strategy's count of skipped updates at the start of the batch

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        engines = trainer.strategy if isinstance(trainer.strategy, SkipsNonFiniteSteps) else None
        # Under DeepSpeed the optimizer's param_groups hold ZeRO's flat partitions (no .grad here); the engine
        # checks the gradients itself and skips the update: only the loss is looked at before the step.
        params = [] if engines else [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = grads_finite([p.grad for p in params])
        if self._loss is not None:
            finite = finite & torch.isfinite(self._loss).all().to(finite.device)
        bad = trainer.strategy.reduce_boolean_decision(not bool(finite), all=False)
        if not bad:
            if not engines:
                self.bad_in_a_row = 0
            return
        if engines and self.skip_bad_steps:
            return  # the engine skips it and on_train_batch_end counts it, with the steps skipped for gradients alone
        loss = "n/a" if self._loss is None else f"{self._loss.float().mean().item():.6g}"
        self._bad_steps(trainer, pl_module, 1, f"loss = {loss}, non-finite loss or gradients")
        for p in params:
            p.grad = None  # the optimizer leaves parameters without a gradient untouched

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if isinstance(trainer.strategy, SkipsNonFiniteSteps):
            self._engine_skips = trainer.strategy.skipped_steps()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not isinstance(trainer.strategy, SkipsNonFiniteSteps):
            return
        # DeepSpeed's ZeRO optimizers skip an update whose gradients hold inf/NaN (and count it): the bad update
        # never reached the weights; here it is stopped on or counted like any other bad step.
        skipped = trainer.strategy.skipped_steps() - self._engine_skips
        if skipped == 0:
            self.bad_in_a_row = 0
            return
        self._bad_steps(trainer, pl_module, skipped, "non-finite gradients: DeepSpeed skipped the update")

    def _bad_steps(self, trainer: L.Trainer, pl_module: L.LightningModule, count: int, what: str) -> None:
        """Stop the run, or count `count` dropped steps when skipping is on and the run of them is short enough."""
        self.bad_in_a_row += count
        if self.bad_in_a_row > self.skip_bad_steps:
            limit = f" ({self.bad_in_a_row} bad steps in a row)" if self.skip_bad_steps else ""
            raise TrainingDiverged(
                f"training diverged at step {trainer.global_step}: {what}{limit}; the last "
                f"checkpoint before it is intact (resume with --ckpt_path last): lower the learning rate, "
                f"clip gradients (--trainer.gradient_clip_val), or skip such steps with --divergence.skip_bad_steps N"
            )
        self.skipped_total += count
        pl_module.log("train/skipped_steps", float(self.skipped_total), on_step=True, on_epoch=False)
