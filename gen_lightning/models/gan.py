"""GANModule: a generator and a discriminator trained in turn, by hand (manual optimization).

One training batch = `n_critic` discriminator steps (each on the same real images, fresh noise each
time) followed by one generator step. Each step freezes the other network (`training_only`),
clips gradients itself when `grad_clip > 0` (Lightning's Trainer clipping is for automatic
optimization only) and goes through Lightning's optimizer wrapper, so precision plugins and
strategies see every step.

Step counting: Lightning's `global_step` counts optimizer steps, and with manual optimization both
optimizers count. One batch therefore advances `global_step` by n_critic + 1, and `trainer.max_steps`
is a budget of optimizer steps: generator steps = max_steps / (n_critic + 1). See docs/gan.md.

Under DDP the nets are wrapped one by one (gen_lightning.strategies.submodule_ddp), under DeepSpeed each
gets its own engine (gen_lightning.strategies.deepspeed_engines): each step runs the network it trains
through `network_unit(...)` (gen_lightning/capabilities.py), everything else calls the plain networks.

Logged: train/d_loss (with penalties), train/g_loss, train/d_real and train/d_fake (mean raw scores),
train/gp, train/r1 when used; val/d_loss, val/d_real, val/d_fake on held-out images vs samples. A
val/d_loss far above train/d_loss means the discriminator memorises the training set (Karras et al.
2020); each held-out image meets its own fixed latent, so val/* is the same on any number of ranks.
No loss tells which checkpoint samples best, so the GAN names no checkpoint metric: with
GenerativeMetrics (in the GAN configs) the checkpoint callback keeps the best by val/fid, else the latest.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Optional

import lightning as L
import torch

from gen_lightning.callbacks.logging_step import logs_this_step
from gen_lightning.capabilities import WrapsNetworks, network_unit
from gen_lightning.errors import UserError, check_learning_rates
from gen_lightning.hook_dispatch import PlainHookName
from gen_lightning.models.ema import ema_copy
from gen_lightning.models.gan_losses import (
    GANLoss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from gen_lightning.metrics.means import WeightedMeans
from gen_lightning.models.compiled import compile_nets
from gen_lightning.models.flops import count, meta_like, meta_twin
from gen_lightning.models.image_family import check_image_shape, check_num_classes, default_labels, per_sample_noise
from gen_lightning.models.nets.gan_nets import build_gan_nets
from gen_lightning.strategies.sharding import full_parameters


class GANModule(PlainHookName, L.LightningModule):
    checkpoint_metric = None  # see the module docstring
    progress_bar_values = {"d_loss": "train/d_loss", "g_loss": "train/g_loss"}
    # Trained one at a time: SubmoduleDDPStrategy gives each its own DDP wrapper.
    ddp_submodules = ("generator", "discriminator")  # capabilities.TrainsNetworksInTurn

    def __init__(
        self,
        net: Literal["mlp", "dcgan"] = "dcgan",
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 0,
        latent_dim: int = 100,
        width: int = 64,
        d_norm: Literal["batch", "none"] = "batch",
        loss: GANLoss = "nonsaturating",
        n_critic: int = 1,
        gp_weight: float = 10.0,
        r1_gamma: float = 0.0,
        g_lr: float = 2e-4,
        d_lr: float = 2e-4,
        g_betas: tuple[float, float] = (0.5, 0.999),
        d_betas: tuple[float, float] = (0.5, 0.999),
        grad_clip: float = 0.0,
        ema_decay: float = 0.0,
        compile: bool = False,
    ) -> None:
        """
        Args:
            net: `mlp` (noise 100 -> 784, the classic MNIST GAN) or `dcgan` (image sides 16, 28, 32, 64).
            image_size: side of the (square) images; linked from data.image_size by the CLI.
            channels: image channels; linked from data.channels by the CLI.
            num_classes: > 0 makes both nets class-conditional on the batch labels; 0 = unconditional.
            latent_dim: size of the generator's noise vector z.
            width: base width; dcgan: channels of the widest-resolution conv layer (64 as in the paper);
                mlp: hidden layers are 4/8/16 x width in G and 8/4 x width in D.
            d_norm: batch norm in the discriminator (`batch`, DCGAN) or none; wgan-gp needs `none`
                because its penalty is per sample and batch norm mixes the samples of a batch.
            loss: `nonsaturating`, `hinge` or `wgan-gp` (see gen_lightning/models/gan_losses.py).
            n_critic: discriminator steps per generator step (WGAN-GP paper: 5).
            gp_weight: weight of the wgan-gp gradient penalty (paper: 10).
            r1_gamma: weight gamma of the R1 penalty gamma/2 * |grad D(real)|^2; 0 = off.
            g_lr: the generator's Adam learning rate (DCGAN: 2e-4).
            d_lr: the discriminator's Adam learning rate (DCGAN: 2e-4).
            g_betas: the generator's Adam betas (DCGAN: (0.5, 0.999)).
            d_betas: the discriminator's Adam betas (DCGAN: (0.5, 0.999)).
            grad_clip: clip each network's gradient norm to this value before its step; 0 = off.
            ema_decay: keep an exponential moving average of the generator with this decay (e.g. 0.999)
                and sample/evaluate with it; 0 = off (tiny runs are too short for an average to help).
            compile: torch.compile the generator and the discriminator in place (not the EMA copy, which only
                samples); not with wgan-gp or r1_gamma > 0, whose penalties need a double backward that
                torch.compile does not support. Checkpoints keep the eager parameter names.
        """
        super().__init__()
        check_learning_rates(g_lr=g_lr, d_lr=d_lr)
        self.save_hyperparameters()
        self.automatic_optimization = False
        if n_critic < 1:
            raise UserError(f"model.n_critic must be >= 1, got {n_critic}")
        if loss == "wgan-gp" and net == "dcgan" and d_norm == "batch":
            raise UserError(
                "wgan-gp's gradient penalty is per sample but batch norm in the discriminator mixes the "
                "samples of a batch; set --model.d_norm none"
            )
        if compile and (loss == "wgan-gp" or r1_gamma > 0):
            raise UserError(
                "model.compile: torch.compile does not support the double backward of the wgan-gp "
                "and R1 penalties; set --model.compile false (or another loss and r1_gamma 0)"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise UserError(f"model.ema_decay must be in [0, 1) (0 = off), got {ema_decay}")
        self.image_shape = (channels, image_size, image_size)
        try:
            self.generator, self.discriminator = build_gan_nets(
                net, self.image_shape, latent_dim, width, num_classes, d_norm
            )
        except ValueError as err:
            raise UserError(f"{err}; set --model.image_size and data.image_size to a supported size") from None
        self.generator_ema = ema_copy(self.generator, ema_decay) if ema_decay > 0 else None
        self.val_means = WeightedMeans("val/d_loss", "val/d_real", "val/d_fake")  # exact under DDP (metrics/means.py)

    # -- sampling ---------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes the model is conditioned on; 0 = unconditional (capabilities.SamplesImagesByClass)."""
        return self.hparams.num_classes

    @property
    def conditional(self) -> bool:
        return self.hparams.num_classes > 0

    @property
    def gradient_clip(self) -> float:
        """`grad_clip`, for a strategy whose engines clip in their own step (capabilities.NamesGradientClip)."""
        return self.hparams.grad_clip

    def noise(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """n images in [-1, 1], [n, C, H, W], from the EMA generator when there is one.
        Conditional models draw classes 0, 1, ..., num_classes - 1, 0, 1, ... unless `labels` is given."""
        if self.conditional and labels is None:
            labels = default_labels(n, self.hparams.num_classes)
        return self.generate(self.noise(n, generator), labels)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images from given latents (and labels when conditional), by the EMA generator when there is one."""
        labels = labels.to(self.device) if self.conditional else None
        net = self.generator_ema.module if self.generator_ema is not None else self.generator
        return net(z.to(self.device), labels)

    # -- training ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = batch[0], (batch[1] if self.conditional else None)
        opt_g, opt_d = self.optimizers()
        # Only on the steps Lightning writes to the loggers (callbacks/logging_step.py): it drops the others' on_step
        # values anyway, reads progress-bar values on the host, and each `self.log` costs ~0.5 ms of bookkeeping,
        # several per batch for a GAN (benchmarks/README.md §1). `train/*` in callback_metrics: the latest logged.
        logs = logs_this_step(self._trainer)
        for _ in range(self.hparams.n_critic):
            d_logs = self.discriminator_step(opt_d, real, labels, logs)
        g_loss = self.generator_step(opt_g, real.shape[0], labels)
        if self.generator_ema is not None:
            with full_parameters(self.generator):  # ZeRO-3 keeps only a shard of each weight per rank
                self.generator_ema.update_parameters(self.generator)
        if logs:
            self.log_dict({**d_logs, "train/g_loss": g_loss}, on_step=True, on_epoch=False)

    def discriminator_step(
        self, opt, real: torch.Tensor, labels: Optional[torch.Tensor], with_logs: bool = True
    ) -> dict:
        """One D update; what to log of it (empty without `with_logs`: the values are reduced only when logged)."""
        # G is frozen although its forward runs under no_grad: per-network strategies (DeepSpeed engines) tell which
        # network a backward trains by what requires grad.
        with self.training_only("discriminator"):
            with torch.no_grad():
                fake = self.generator(self.noise(real.shape[0]), labels)
            loss, logs = self.discriminator_objective(
                network_unit(self, "discriminator"), real, fake, labels, with_logs
            )
            self.optimize(opt, loss)
        if with_logs:
            logs["train/d_loss"] = loss.detach()
        return logs

    def discriminator_objective(
        self,
        discriminator,
        real: torch.Tensor,
        fake: torch.Tensor,
        labels: Optional[torch.Tensor],
        with_logs: bool = True,
    ) -> tuple[torch.Tensor, dict]:
        """D's loss with its penalties on a batch of real and generated images, and what to log of it (nothing
        without `with_logs`: two reductions and a detach per penalty saved on the steps that do not log)."""
        hp = self.hparams
        real = real.detach().requires_grad_(hp.r1_gamma > 0)  # R1 differentiates D(real) w.r.t. real
        real_scores = discriminator(real, labels)
        fake_scores = discriminator(fake, labels)
        loss = discriminator_loss(hp.loss, real_scores, fake_scores)
        logs = (
            {"train/d_real": real_scores.detach().mean(), "train/d_fake": fake_scores.detach().mean()}
            if with_logs
            else {}
        )
        if hp.loss == "wgan-gp":
            gp = gradient_penalty(discriminator, real, fake, labels)
            loss = loss + hp.gp_weight * gp
            if with_logs:
                logs["train/gp"] = gp.detach()
        if hp.r1_gamma > 0:
            r1 = r1_penalty(real_scores, real)
            loss = loss + 0.5 * hp.r1_gamma * r1
            if with_logs:
                logs["train/r1"] = r1.detach()
        return loss, logs

    def generator_step(self, opt, batch_size: int, labels: Optional[torch.Tensor]) -> torch.Tensor:
        with self.training_only("generator"):  # freezes D: the G loss flows through it, D is not updated
            fake = network_unit(self, "generator")(self.noise(batch_size), labels)
            # The plain D: its gradients are not wanted, so its DDP wrapper must not wait for them.
            loss = generator_loss(self.hparams.loss, self.discriminator(fake, labels))
            self.optimize(opt, loss)
        return loss.detach()

    def flops_per_batch(self, batch) -> int:
        """FLOPs of one training batch (n_critic D steps, then one G step, each forward + backward, as training_step
        runs them), counted on the meta device. Without the WGAN-GP / R1 penalties: torch's FLOP counter cannot
        follow their double backward, so with a penalty this is a lower bound (MFU too)."""
        twin, real = meta_twin(self), meta_like(batch[0])
        labels = meta_like(batch[1]) if self.conditional else None
        z = torch.empty(real.shape[0], self.hparams.latent_dim, device="meta")

        def d_forward():
            with torch.no_grad():
                fake = twin.generator(z, labels)
            return discriminator_loss(
                self.hparams.loss, twin.discriminator(real, labels), twin.discriminator(fake, labels)
            )

        d_step = count(twin, d_forward, lambda loss: loss)
        with twin.training_only("generator"):
            g_step = count(
                twin,
                lambda: generator_loss(self.hparams.loss, twin.discriminator(twin.generator(z, labels), labels)),
                lambda loss: loss,
            )
        return self.hparams.n_critic * d_step + g_step

    @contextmanager
    def training_only(self, name: str) -> Iterator[None]:
        """Freeze every network but `name` for one step, as Lightning's `toggled_optimizer` does; done here on
        the networks rather than on optimizer parameter groups because DeepSpeed's ZeRO optimizers hold flat
        shards, not the networks' parameters."""
        # One flat list of the other networks' parameters, walked once instead of three recursive module walks per step.
        frozen = [p for other in self.ddp_submodules if other != name for p in self.get_submodule(other).parameters()]
        saved = [p.requires_grad for p in frozen]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(frozen, saved):
                p.requires_grad_(flag)

    def optimize(self, opt, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()

    # -- validation -------------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        real, labels, index = batch[0], batch[1], batch[-1]  # (images, labels, index)
        # Each held-out image's own fixed latent: the same val/* on any number of ranks and at every evaluation.
        z = per_sample_noise(index, (self.hparams.latent_dim,)).to(real.dtype)
        fake = self.generate(z, labels)
        labels = labels if self.conditional else None
        real_scores, fake_scores = self.discriminator(real, labels), self.discriminator(fake, labels)
        self.val_means.log(
            self,
            {
                "val/d_loss": discriminator_loss(self.hparams.loss, real_scores, fake_scores),
                "val/d_real": real_scores.mean(),
                "val/d_fake": fake_scores.mean(),
            },
            real.shape[0],
            prog_bar=("val/d_loss",),
        )

    # -- Lightning plumbing -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        check_image_shape(self, self.image_shape)
        refuse_single_unit_strategies(self)
        check_num_classes(self, self.hparams.num_classes, "GAN")
        if self.hparams.compile:
            compile_nets(self.generator, self.discriminator)

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.g_lr, betas=tuple(hp.g_betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.d_lr, betas=tuple(hp.d_betas))
        return opt_g, opt_d


def refuse_single_unit_strategies(module: GANModule) -> None:
    """Strategies that cannot drive two networks trained in turn are refused here, in one line, before anything
    is wrapped: the GAN needs one unit per network (capabilities.WrapsNetworks)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

    strategy = module.trainer.strategy
    if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)):
        raise UserError(
            f"{type(strategy).__name__} wraps one module and the GAN trains two networks in turn, each with its own "
            f"optimizer; use DDP (configs/trainer/ddp.yaml) or DeepSpeed (configs/trainer/deepspeed_stage3.yaml shards "
            f"like FSDP), which give each network its own unit"
        )
    if isinstance(strategy, DeepSpeedStrategy) and not isinstance(strategy, WrapsNetworks):
        raise UserError(  # Lightning's own strategy: one engine, one optimizer
            "Lightning's DeepSpeedStrategy drives one optimizer and a GAN steps two; use gen-lightning's "
            "(configs/trainer/deepspeed_stage2.yaml: gen_lightning.strategies.DeepSpeedCPUStrategy, one engine per network)"
        )
