"""VAEModule: ELBO = reconstruction + beta * KL, with linear KL warm-up.

Logged (all per image, summed over pixels/latent dims, averaged over the batch):
  train/loss   the optimised objective: recon + beta_t * KL, where beta_t ramps 0 -> beta
  train/recon  reconstruction negative log-likelihood
  train/kl     KL(q(z|x) || N(0, I))
  train/beta   the warm-up weight in force
  val/elbo     the evidence lower bound -(recon + KL) with beta = 1, whatever beta is: higher is better,
               and runs with different beta or warm-up stay comparable on it
The warm-up position is a function of `global_step`, so it resumes exactly from a checkpoint.

Conditional VAE (`num_classes > 0`, Sohn et al. 2015): encoder q(z|x, y) and decoder p(x|z, y) both read
the batch's label (one-hot, see nets/vae_nets.py); the prior stays N(0, I), so `sample(n, labels=...)`
draws z from it and decodes it as the asked class. The logged keys are the same; val/elbo is then the
bound on log p(x|y). With `num_classes=0` the model is today's unconditional VAE, parameter for parameter.
"""

from __future__ import annotations

from typing import Literal, Optional

import lightning as L
import torch
import torch.nn.functional as F

from gen_lightning.errors import check_learning_rates
from gen_lightning.hook_dispatch import PlainHookName
from gen_lightning.metrics.means import WeightedMeans
from gen_lightning.models.compiled import compile_nets
from gen_lightning.models.flops import count, meta_like, meta_twin
from gen_lightning.models.image_family import check_image_shape, check_num_classes, default_labels, per_sample_noise
from gen_lightning.models.nets.vae_nets import build_vae_nets


class VAEModule(PlainHookName, L.LightningModule):
    # Used by the checkpoint callback to keep the best model.
    checkpoint_metric = ("val/elbo", "max")
    progress_bar_values = {"loss": "train/loss"}

    def __init__(
        self,
        net: Literal["mlp", "conv"] = "mlp",
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 0,
        latent_dim: int = 20,
        hidden_dim: int = 400,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        recon_loss: Literal["bce", "mse"] = "bce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        compile: bool = False,
    ) -> None:
        """
        Args:
            net: `mlp` (784-400-20, the classic VAE) or `conv`.
            image_size: side of the (square) images; linked from data.image_size by the CLI.
            channels: image channels; linked from data.channels by the CLI.
            num_classes: > 0 conditions encoder and decoder on the batch labels (conditional VAE); 0 = unconditional.
            latent_dim: size of z.
            hidden_dim: width of the hidden layer (mlp) / of the fully connected layer after the convs (conv).
            beta: weight of the KL term (beta-VAE); 1 is the plain ELBO.
            kl_warmup_steps: optimizer steps over which the KL weight rises linearly from 0 to beta.
            recon_loss: `bce` reads the decoder as Bernoulli logits of pixels in [0, 1] (classic VAE);
                `mse` as a unit-variance Gaussian mean (tanh) in [-1, 1].
            lr: Adam learning rate.
            weight_decay: Adam's L2 weight decay.
            compile: torch.compile the nets in place (faster steps after a one-off compile; checkpoints keep the
                eager parameter names, see gen_lightning/models/compiled.py).
        """
        super().__init__()
        check_learning_rates(lr=lr)
        self.save_hyperparameters()
        self.image_shape = (channels, image_size, image_size)
        self.encoder, self.decoder = build_vae_nets(net, self.image_shape, hidden_dim, latent_dim, num_classes)
        self.val_means = WeightedMeans("val/elbo", "val/recon", "val/kl")  # exact under DDP (metrics/means.py)

    @property
    def num_classes(self) -> int:
        """Classes the model is conditioned on; 0 = unconditional (capabilities.SamplesImagesByClass)."""
        return self.hparams.num_classes

    def _labels(self, labels: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The labels the nets read: on the model's device when conditional, None otherwise."""
        if self.num_classes == 0:
            return None
        if labels is None:
            raise ValueError("a conditional VAE encodes and decodes given the labels: pass labels")
        return labels.to(self.device)

    # -- the model --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, self._labels(labels))

    def decode(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Latents -> images in [-1, 1] (the data range)."""
        out = self.decoder(z, self._labels(labels))
        return torch.sigmoid(out) * 2 - 1 if self.hparams.recon_loss == "bce" else torch.tanh(out)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None, eps: Optional[torch.Tensor] = None):
        """Decoder logits, mu, logvar; `eps` is the reparameterisation noise (drawn when None)."""
        mu, logvar = self.encode(x, labels)
        eps = torch.randn_like(mu) if eps is None else eps
        z = mu + eps * torch.exp(0.5 * logvar)  # reparameterisation trick
        return self.decoder(z, self._labels(labels)), mu, logvar

    @torch.no_grad()
    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """n images from the prior, in [-1, 1], shape [n, C, H, W]. Conditional models draw classes
        0, 1, ..., num_classes - 1, 0, 1, ... unless `labels` ([n] class indices) is given."""
        z = torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)
        if self.num_classes > 0 and labels is None:
            labels = default_labels(n, self.num_classes)
        return self.decode(z, labels)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Decode the posterior mean of x: the deterministic reconstruction, in [-1, 1]. A conditional
        model needs the labels of x."""
        mu, _ = self.encode(x.to(self.device), labels)
        return self.decode(mu, labels)

    # -- the objective ----------------------------------------------------------------------------
    def losses(
        self, x: torch.Tensor, labels: Optional[torch.Tensor] = None, eps: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction NLL and KL, each averaged over the batch."""
        out, mu, logvar = self(x, labels, eps)
        if self.hparams.recon_loss == "bce":
            target = (x + 1) / 2
            recon = F.binary_cross_entropy_with_logits(out, target, reduction="sum") / x.shape[0]
        else:
            recon = 0.5 * F.mse_loss(torch.tanh(out), x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
        return recon, kl

    def kl_weight(self) -> float:
        warmup = self.hparams.kl_warmup_steps
        ramp = 1.0 if warmup <= 0 else min(1.0, self.global_step / warmup)
        return self.hparams.beta * ramp

    def _batch(self, batch) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(images, labels); labels only for a conditional model (the image layer always yields them)."""
        return batch[0], (batch[1] if self.num_classes > 0 else None)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, labels = self._batch(batch)
        recon, kl = self.losses(x, labels)
        beta = self.kl_weight()
        loss = recon + beta * kl
        self.log_dict(
            {"train/loss": loss, "train/recon": recon, "train/kl": kl, "train/beta": beta},
            prog_bar=False,
            on_step=True,
            on_epoch=False,
        )
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, labels = self._batch(batch)
        index = batch[-1]  # validation batches are (images, labels, index)
        # Each image's own fixed noise: the same val/elbo on any number of ranks, and at every evaluation.
        recon, kl = self.losses(x, labels, per_sample_noise(index, (self.hparams.latent_dim,)).to(x.dtype))
        # Means over the whole validation set, every image once, whatever the number of ranks.
        self.val_means.log(
            self, {"val/elbo": -(recon + kl), "val/recon": recon, "val/kl": kl}, x.shape[0], prog_bar=("val/elbo",)
        )

    def flops_per_batch(self, batch) -> int:
        """FLOPs of one training step on `batch` (forward + backward of the ELBO), counted on the meta device."""
        twin, x = meta_twin(self), meta_like(batch[0])
        labels = meta_like(batch[1]) if self.num_classes > 0 else None
        return count(twin, lambda: twin.losses(x, labels), lambda losses: losses[0] + losses[1])

    def setup(self, stage: str) -> None:
        check_image_shape(self, self.image_shape)
        check_num_classes(self, self.num_classes, "VAE")
        if self.hparams.compile:
            compile_nets(self.encoder, self.decoder)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
