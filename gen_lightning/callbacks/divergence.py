"""DivergenceGuard: a NaN/Inf loss or gradient never reaches a checkpoint, and stops or is skipped.

Looked at just before every optimizer step (`on_before_optimizer_step`, which Lightning calls for
automatic and manual optimization alike, so GAN generator and critic steps are covered too): the
loss of the step (seen in `on_before_backward`) and the gradients of the optimizer's parameters.

- `skip_bad_steps: 0` (default): the check stays on the device (no host-device sync in the step): a flag
  collects "some step since the last look was not finite" and the step and loss of the first such step.
  The host reads it (one sync, and one all-reduce under DDP) on logging steps (`log_every_n_steps`), before
  every checkpoint is written (`on_save_checkpoint`, on every rank, before any file is touched) and at the
  end of training. The guarantee: the run stops with one line naming the first bad step and its loss at the
  latest at the next logging step or checkpoint, whichever comes first; the weights after a bad update are
  never written to a checkpoint, so `last.ckpt` holds the last good state (`--ckpt_path last` resumes it),
  and the run never ends with exit 0 after one.
- `skip_bad_steps: N`: the bad step's gradients are dropped (`p.grad = None`, which torch optimizers
  treat as "no update" for that parameter: no momentum move, no Adam step count), training goes on;
  more than N bad steps in a row still stop the run. For automatic optimization this is the same
  as a training_step returning None; for a GAN it skips just the optimizer whose step went bad.
  Dropping exactly the bad update is a decision taken on the host before the step: one sync per
  optimizer step, the price of this mode.

Under DeepSpeed (ZeRO 1-3) the engine itself checks the gradient norm before every update and skips an
update with inf/NaN gradients (`engine.skipped_steps`, a host counter DeepSpeed keeps anyway); the
optimizer's parameters are ZeRO's flat partitions, whose `.grad` is empty here. So the loss is checked as
above, and the steps the engines skipped are read at the end of each batch (the strategy's
`skipped_steps()`, capabilities.SkipsNonFiniteSteps): stop (the weights are those before the bad step) or
count them, as above.

Under DDP the decision is taken together (any rank bad = all skip or all stop): gradients are
already averaged, but a loss is per rank, and ranks that disagree would hang in the next collective.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from gen_lightning.callbacks.logging_step import logs_this_step
from gen_lightning.capabilities import SkipsNonFiniteSteps
from gen_lightning.errors import UserError


def grads_finite(grads: list[torch.Tensor]) -> torch.Tensor:
    """True when every gradient is finite, as a 0-d bool tensor on their device (no host sync).
    Each tensor's 2-norm, accumulated in fp32 (one fused foreach kernel where the device has one), is finite
    exactly when its entries are, unless the norm exceeds fp32's range (1.8e19, where Adam's second moment
    overflows too); the largest of them is finite when all are. Measured (CPU, 1 thread): DCGAN G 0.13 ms
    vs 1.9 ms for a max-norm and 0.20 ms for aminmax per tensor; nano GPT (52 tensors) ~0.3 ms."""
    if not grads:
        return torch.tensor(True)
    return torch.isfinite(torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)).max())


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
        # (first bad step since the host last looked, -1 for none; that step's loss): device tensors
        self._first_bad: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_bad = None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        engines = trainer.strategy if isinstance(trainer.strategy, SkipsNonFiniteSteps) else None
        if engines and self.skip_bad_steps:
            return  # the engine skips it and on_train_batch_end counts it, with the steps skipped for gradients alone
        # Under DeepSpeed the optimizer's param_groups hold ZeRO's flat partitions (no .grad here); the engine
        # checks the gradients itself and skips the update: only the loss is looked at before the step.
        params = (
            [] if engines else [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        )
        finite = grads_finite([p.grad for p in params])
        loss = self._loss
        if loss is not None:
            finite = finite & torch.isfinite(loss).all().to(finite.device)
        if not self.skip_bad_steps:
            self._remember(finite, trainer.global_step, loss)  # looked at on the host later (module docstring)
            return
        bad = trainer.strategy.reduce_boolean_decision(not bool(finite), all=False)
        if not bad:
            self.bad_in_a_row = 0
            return
        shown = "n/a" if loss is None else f"{loss.float().mean().item():.6g}"
        self._bad_steps(trainer, pl_module, 1, f"loss = {shown}, non-finite loss or gradients")
        for p in params:
            p.grad = None  # the optimizer leaves parameters without a gradient untouched

    def _remember(self, finite: torch.Tensor, step: int, loss: Optional[torch.Tensor]) -> None:
        """Note this step if it is the first bad one since the host looked, on the device: nothing here waits."""
        device = finite.device
        value = torch.full((), float("nan"), device=device) if loss is None else loss.float().mean().to(device)
        if self._first_bad is None:
            self._first_bad = (torch.full((), -1, dtype=torch.long, device=device), torch.zeros((), device=device))
        first_step, first_loss = self._first_bad
        first = ~finite & (first_step < 0)
        self._first_bad = (torch.where(first, step, first_step), torch.where(first, value, first_loss))

    def check(self, trainer: L.Trainer) -> None:
        """The host's look at the first bad step (every rank, together): stop with its line."""
        first_bad, self._first_bad = self._first_bad, None
        step = -1 if first_bad is None else int(first_bad[0])
        if not trainer.strategy.reduce_boolean_decision(step >= 0, all=False):
            return
        if step >= 0:
            what = f"loss = {float(first_bad[1]):.6g}, non-finite loss or gradients"
        else:
            step, what = trainer.global_step, "non-finite loss or gradients on another rank"
        self._bad_steps(trainer, None, 1, what, step=step)  # skip_bad_steps is 0 here: this raises

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self.skip_bad_steps and logs_this_step(trainer):
            self.check(trainer)
        if not isinstance(trainer.strategy, SkipsNonFiniteSteps):
            return
        # DeepSpeed's ZeRO optimizers skip an update whose gradients hold inf/NaN (and count it): the bad update
        # never reached the weights; here it is stopped on or counted like any other bad step.
        skipped = trainer.strategy.skipped_steps() - self._engine_skips
        if skipped == 0:
            self.bad_in_a_row = 0
            return
        self._bad_steps(trainer, pl_module, skipped, "non-finite gradients: DeepSpeed skipped the update")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Called on every rank while the checkpoint is being assembled, before any file is written.
        if not self.skip_bad_steps:
            self.check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.skip_bad_steps:
            self.check(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if isinstance(trainer.strategy, SkipsNonFiniteSteps):
            self._engine_skips = trainer.strategy.skipped_steps()

    def _bad_steps(
        self,
        trainer: L.Trainer,
        pl_module: Optional[L.LightningModule],
        count: int,
        what: str,
        step: Optional[int] = None,
    ) -> None:
        """Stop the run, or count `count` dropped steps when skipping is on and the run of them is short enough."""
        self.bad_in_a_row += count
        if self.bad_in_a_row > self.skip_bad_steps:
            limit = f" ({self.bad_in_a_row} bad steps in a row)" if self.skip_bad_steps else ""
            raise TrainingDiverged(
                f"training diverged at step {trainer.global_step if step is None else step}: {what}{limit}; the last "
                f"checkpoint before it is intact (resume with --ckpt_path last): lower the learning rate, "
                f"clip gradients (--trainer.gradient_clip_val), or skip such steps with --divergence.skip_bad_steps N"
            )
        self.skipped_total += count
        pl_module.log("train/skipped_steps", float(self.skipped_total), on_step=True, on_epoch=False)
