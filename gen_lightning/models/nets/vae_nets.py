"""VAE encoders and decoders.

`mlp` is the network of the original VAE paper's MNIST experiments (Kingma & Welling, 2014):
784 -> 400 -> (mu, logvar) of 20 dims, and back 20 -> 400 -> 784.
`conv` is a small strided-conv encoder with a mirrored transposed-conv decoder for any image side
divisible by 4 (28, 32, 64, ...).
The decoder returns *logits/means in the data space before the output squashing*: the VAE module
decides how to read them (Bernoulli logits for `bce`, tanh means for `mse`).

Conditioning (`num_classes > 0`, the conditional VAE of Sohn et al. 2015): the one-hot label is
concatenated to the encoder's input (to the flattened image for `mlp`, as constant planes beside the image
channels for `conv`) and to the decoder's latent. Only the first layers grow; no layer is added, so with
`num_classes=0` the nets, their parameter names and their checkpoints are the unconditional ones.
Every net takes `(input, labels)`; labels are ignored (may be None) when unconditional.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def with_label(h: torch.Tensor, labels: Optional[torch.Tensor], num_classes: int) -> torch.Tensor:
    """`h` with the one-hot label appended along dim 1 ([B, D] -> [B, D + K]; images [B, C, H, W] get K
    constant planes); `h` itself when unconditional."""
    if num_classes == 0:
        return h
    if labels is None:
        raise ValueError("a conditional VAE net needs the labels of its inputs")
    code = F.one_hot(labels.long(), num_classes).to(h.dtype)
    if h.dim() == 4:
        code = code[:, :, None, None].expand(-1, -1, *h.shape[2:])
    return torch.cat([h, code], dim=1)


class MLPEncoder(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        # The Flatten stays the first entry (a no-op on the already flat input) so that the Linear keeps
        # the name `body.1` that unconditional checkpoints use.
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(image_shape) + num_classes, hidden_dim), nn.ReLU())
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(with_label(x.flatten(1), labels, self.num_classes))
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.image_shape, self.num_classes = image_shape, num_classes
        self.body = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, math.prod(image_shape))
        )

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.body(with_label(z, labels, self.num_classes)).view(-1, *self.image_shape)


class ConvEncoder(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int, num_classes: int = 0, width: int = 32
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(c + num_classes, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), hidden_dim),
            nn.LeakyReLU(0.2),
        )
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(with_label(x, labels, self.num_classes))
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int, num_classes: int = 0, width: int = 32
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        self.start = (2 * width, h // 4, w // 4)
        self.num_classes = num_classes
        self.fc = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, math.prod(self.start)),
            nn.ReLU(),
        )
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.body(self.fc(with_label(z, labels, self.num_classes)).view(-1, *self.start))


def build_vae_nets(net: str, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int, num_classes: int = 0):
    """(encoder, decoder). encoder(x, labels) -> (mu, logvar) [B, latent]; decoder(z, labels) -> [B, C, H, W]."""
    if net == "mlp":
        return (
            MLPEncoder(image_shape, hidden_dim, latent_dim, num_classes),
            MLPDecoder(image_shape, hidden_dim, latent_dim, num_classes),
        )
    if net == "conv":
        _, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"the conv VAE needs an image side divisible by 4, got {h}x{w}")
        return (
            ConvEncoder(image_shape, hidden_dim, latent_dim, num_classes),
            ConvDecoder(image_shape, hidden_dim, latent_dim, num_classes),
        )
    raise ValueError(f"unknown VAE net {net!r}; choose 'mlp' or 'conv'")
