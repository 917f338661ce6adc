"""VAEModule: ELBO = reconstruction + beta * KL, with linear KL warm-up.

Logged (all per image, summed over pixels/latent dims, averaged over the batch):
  train/loss   the optimised objective: recon + beta_t * KL, where beta_t ramps 0 -> beta
  train/recon  reconstruction negative log-likelihood
  train/kl     KL(q(z|x) || N(0, I))
  train/beta   the warm-up weight in force
  val/elbo     the evidence lower bound -(recon + KL) with beta = 1, whatever beta is: higher is better,
               and runs with different beta or warm-up stay comparable on it
The warm-up position is a function of `global_step`, so it resumes exactly from a checkpoint.
"""

from __future__ import annotations

from typing import Literal, Optional

import lightning as L
import torch
import torch.nn.functional as F

from gen_lightning.models.flops import count, meta_like, meta_twin
from gen_lightning.models.image_family import check_image_shape, per_sample_noise
from gen_lightning.models.nets.vae_nets import build_vae_nets


class VAEModule(L.LightningModule):
    # Used by the checkpoint callback to keep the best model.
    checkpoint_metric = ("val/elbo", "max")

    def __init__(
        self,
        net: Literal["mlp", "conv"] = "mlp",
        image_size: int = 28,
        channels: int = 1,
        latent_dim: int = 20,
        hidden_dim: int = 400,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        recon_loss: Literal["bce", "mse"] = "bce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        """
        Args:
            net: `mlp` (784-400-20, the classic VAE) or `conv`.
            beta: weight of the KL term (beta-VAE); 1 is the plain ELBO.
            kl_warmup_steps: optimizer steps over which the KL weight rises linearly from 0 to beta.
            recon_loss: `bce` reads the decoder as Bernoulli logits of pixels in [0, 1] (classic VAE);
                `mse` as a unit-variance Gaussian mean (tanh) in [-1, 1].
        """
        super().__init__()
        self.save_hyperparameters()
        self.image_shape = (channels, image_size, image_size)
        self.encoder, self.decoder = build_vae_nets(net, self.image_shape, hidden_dim, latent_dim)

    # -- the model --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1] (the data range)."""
        out = self.decoder(z)
        return torch.sigmoid(out) * 2 - 1 if self.hparams.recon_loss == "bce" else torch.tanh(out)

    def forward(self, x: torch.Tensor, eps: Optional[torch.Tensor] = None):
        """Decoder logits, mu, logvar; `eps` is the reparameterisation noise (drawn when None)."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if eps is None else eps
        z = mu + eps * torch.exp(0.5 * logvar)  # reparameterisation trick
        return self.decoder(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from the prior, in [-1, 1], shape [n, C, H, W]."""
        z = torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)
        return self.decode(z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of x: the deterministic reconstruction, in [-1, 1]."""
        mu, _ = self.encode(x.to(self.device))
        return self.decode(mu)

    # -- the objective ----------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, eps: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction NLL and KL, each averaged over the batch."""
        out, mu, logvar = self(x, eps)
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

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0]
        recon, kl = self.losses(x)
        beta = self.kl_weight()
        loss = recon + beta * kl
        self.log_dict(
            {"train/loss": loss, "train/recon": recon, "train/kl": kl, "train/beta": beta},
            prog_bar=False, on_step=True, on_epoch=False,
        )
        self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, index = batch[0], batch[-1]  # (images, labels, index)
        # Each image's own fixed noise: the same val/elbo on any number of ranks, and at every evaluation.
        recon, kl = self.losses(x, per_sample_noise(index, (self.hparams.latent_dim,)).to(x.dtype))
        # Epoch means weighted by batch size and reduced across ranks by Lightning.
        self.log("val/elbo", -(recon + kl), prog_bar=True, sync_dist=True, batch_size=x.shape[0])
        self.log("val/recon", recon, sync_dist=True, batch_size=x.shape[0])
        self.log("val/kl", kl, sync_dist=True, batch_size=x.shape[0])

    def flops_per_batch(self, batch) -> int:
        """FLOPs of one training step on `batch` (forward + backward of the ELBO), counted on the meta device."""
        twin, x = meta_twin(self), meta_like(batch[0])
        return count(twin, lambda: twin.losses(x), lambda losses: losses[0] + losses[1])

    def setup(self, stage: str) -> None:
        check_image_shape(self, self.image_shape)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
