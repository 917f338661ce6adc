"""VAE encoders and decoders.

`mlp` is the network of the original VAE paper's MNIST experiments (Kingma & Welling, 2014):
784 -> 400 -> (mu, logvar) of 20 dims, and back 20 -> 400 -> 784.
`conv` is a small strided-conv encoder with a mirrored transposed-conv decoder for any image side
divisible by 4 (28, 32, 64, ...).
The decoder returns *logits/means in the data space before the output squashing*: the VAE module
decides how to read them (Bernoulli logits for `bce`, tanh means for `mse`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLPEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(image_shape), hidden_dim), nn.ReLU())
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, math.prod(image_shape))
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z).view(-1, *self.image_shape)


class ConvEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int, width: int = 32) -> None:
        super().__init__()
        c, h, w = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), hidden_dim), nn.LeakyReLU(0.2),
        )
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int, width: int = 32) -> None:
        super().__init__()
        c, h, w = image_shape
        self.start = (2 * width, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, math.prod(self.start)), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(-1, *self.start))


def build_vae_nets(net: str, image_shape: tuple[int, int, int], hidden_dim: int, latent_dim: int):
    if net == "mlp":
        return MLPEncoder(image_shape, hidden_dim, latent_dim), MLPDecoder(image_shape, hidden_dim, latent_dim)
    if net == "conv":
        _, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"the conv VAE needs an image side divisible by 4, got {h}x{w}")
        return ConvEncoder(image_shape, hidden_dim, latent_dim), ConvDecoder(image_shape, hidden_dim, latent_dim)
    raise ValueError(f"unknown VAE net {net!r}; choose 'mlp' or 'conv'")
