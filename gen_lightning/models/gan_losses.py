"""GAN objectives on raw discriminator scores, and the two gradient penalties.

nonsaturating  Goodfellow et al. 2014, the "-log D trick" for G:
               D: softplus(-D(x)) + softplus(D(G(z)))      G: softplus(-D(G(z)))
hinge          Lim & Ye 2017 / Miyato et al. 2018 (SNGAN, BigGAN):
               D: relu(1 - D(x)) + relu(1 + D(G(z)))       G: -D(G(z))
wgan-gp        Gulrajani et al. 2017: the critic estimates the Wasserstein-1 distance, kept 1-Lipschitz
               by a penalty on its gradient norm at random points between real and fake images:
               D: D(G(z)) - D(x) + w * (|grad D(x_hat)| - 1)^2   G: -D(G(z))
R1             Mescheder et al. 2018: gamma/2 * |grad D(x)|^2 on real images only; may be added to any loss.
All terms are means over the batch.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F

GANLoss = Literal["nonsaturating", "hinge", "wgan-gp"]


def discriminator_loss(loss: GANLoss, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator/critic objective without penalties."""
    if loss == "nonsaturating":
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    if loss == "hinge":
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
    if loss == "wgan-gp":
        return fake_scores.mean() - real_scores.mean()
    raise ValueError(f"unknown GAN loss {loss!r}")


def generator_loss(loss: GANLoss, fake_scores: torch.Tensor) -> torch.Tensor:
    if loss == "nonsaturating":
        return F.softplus(-fake_scores).mean()
    if loss in ("hinge", "wgan-gp"):
        return -fake_scores.mean()
    raise ValueError(f"unknown GAN loss {loss!r}")


def _input_grad_norm2(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """|d scores / d inputs|^2 per sample; create_graph so the penalty itself can be backpropagated."""
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return grad.flatten(1).pow(2).sum(1)


def gradient_penalty(
    discriminator: Callable[..., torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """WGAN-GP's two-sided penalty E[(|grad D(x_hat)| - 1)^2] at x_hat = eps * real + (1 - eps) * fake."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    norm2 = _input_grad_norm2(discriminator(x_hat, labels), x_hat)
    # The small constant keeps sqrt's gradient finite where the norm is exactly 0.
    return ((norm2 + 1e-12).sqrt() - 1).pow(2).mean()


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E[|grad D(x)|^2] on real images; `real` must have had requires_grad set before D saw it."""
    return _input_grad_norm2(real_scores, real).mean()
