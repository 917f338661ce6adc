"""GAN generators and discriminators, unconditional or class-conditional.

`mlp`   the classic fully connected MNIST GAN: noise 100 -> 256 -> 512 -> 1024 -> 784 (tanh), and a
        784 -> 512 -> 256 -> 1 discriminator (Goodfellow et al. 2014, without maxout/dropout).
`dcgan` Radford et al. 2016: the generator grows a 1x1 noise "image" with transposed convs (batch norm +
        ReLU, tanh at the end); the discriminator shrinks the image with stride-2 convs (LeakyReLU 0.2,
        batch norm after the first layer unless `d_norm="none"`). Works for any side that halves down to
        3..7 pixels: 16, 32, 64 (4x4 start) and 28 (7x7 start, for digits/MNIST).

Conditioning (`num_classes > 0`): the generator concatenates a learned label embedding to the noise
(Mirza & Osindero 2014); the discriminator adds a projection term <embed(y), features(x)> to its score
(Miyato & Koyama 2018), the standard way to condition a discriminator without feeding it one-hot planes.
Both networks take `(input, labels)`; labels are ignored (may be None) when unconditional.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

LABEL_EMBED_DIM = 32  # size of the label code concatenated to the noise of a conditional generator


def dcgan_start_size(image_size: int) -> tuple[int, int]:
    """(start side, number of 2x upsamplings): halve the side while it stays even and above 7."""
    side, n_up = image_size, 0
    while side > 7 and side % 2 == 0:
        side, n_up = side // 2, n_up + 1
    if n_up == 0 or side < 3 or side > 7:
        raise ValueError(
            f"dcgan needs an image side that halves down to 3..7 pixels (16, 28, 32, 64, ...), got {image_size}"
        )
    return side, n_up


class ConditionalInput(nn.Module):
    """Noise, or noise with a learned label code appended: the generator's input vector."""

    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, LABEL_EMBED_DIM) if num_classes > 0 else None
        self.out_dim = latent_dim + (LABEL_EMBED_DIM if num_classes > 0 else 0)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        if self.embed is None:
            return z
        return torch.cat([z, self.embed(labels)], dim=1)


class Discriminator(nn.Module):
    """features(x) -> one linear score, plus the projection <embed(y), features> when conditional."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, 1)
        self.project = nn.Embedding(num_classes, feature_dim) if num_classes > 0 else None

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Raw scores (logits / critic values), shape [B]."""
        h = self.features(x)
        score = self.head(h).squeeze(1)
        if self.project is not None:
            score = score + (self.project(labels) * h).sum(dim=1)
        return score


class MLPGenerator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.input = ConditionalInput(latent_dim, num_classes)
        self.body = nn.Sequential(
            nn.Linear(self.input.out_dim, 4 * width),
            nn.LeakyReLU(0.2),
            nn.Linear(4 * width, 8 * width),
            nn.LeakyReLU(0.2),
            nn.Linear(8 * width, 16 * width),
            nn.LeakyReLU(0.2),
            nn.Linear(16 * width, math.prod(image_shape)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.body(self.input(z, labels)).view(-1, *self.image_shape)


def mlp_discriminator(image_shape: tuple[int, int, int], width: int, num_classes: int) -> Discriminator:
    features = nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(image_shape), 8 * width),
        nn.LeakyReLU(0.2),
        nn.Linear(8 * width, 4 * width),
        nn.LeakyReLU(0.2),
    )
    return Discriminator(features, 4 * width, num_classes)


class DCGANGenerator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int, num_classes: int) -> None:
        super().__init__()
        channels, size, _ = image_shape
        start, n_up = dcgan_start_size(size)
        self.input = ConditionalInput(latent_dim, num_classes)
        widths = [width * 2 ** (n_up - 1 - i) for i in range(n_up)]  # e.g. 64x64: 512, 256, 128, 64
        # A transposed conv with kernel = start side turns the 1x1 input into a start x start map.
        layers = [
            nn.ConvTranspose2d(self.input.out_dim, widths[0], start, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.input(z, labels)
        return self.body(x[:, :, None, None])


def dcgan_discriminator(image_shape: tuple[int, int, int], width: int, num_classes: int, norm: str) -> Discriminator:
    channels, size, _ = image_shape
    start, n_down = dcgan_start_size(size)
    widths = [width * 2**i for i in range(n_down)]  # e.g. 64x64: 64, 128, 256, 512
    layers, c_in = [], channels
    for i, c_out in enumerate(widths):
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none" or i == 0))
        if norm == "batch" and i > 0:  # DCGAN: no batch norm on the layer that sees the images
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, True))
        c_in = c_out
    features = nn.Sequential(*layers, nn.Flatten())
    discriminator = Discriminator(features, widths[-1] * start * start, num_classes)
    init_dcgan_weights(discriminator)
    return discriminator


def init_dcgan_weights(net: nn.Module) -> None:
    """DCGAN's init: conv weights N(0, 0.02), batch-norm scales N(1, 0.02) and shifts 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_gan_nets(
    net: str, image_shape: tuple[int, int, int], latent_dim: int, width: int, num_classes: int, d_norm: str
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator). generator(z [B, latent], labels) -> [B, C, H, W] in [-1, 1];
    discriminator(x, labels) -> scores [B]."""
    if net == "mlp":
        return (
            MLPGenerator(image_shape, latent_dim, width, num_classes),
            mlp_discriminator(image_shape, width, num_classes),
        )
    if net == "dcgan":
        return (
            DCGANGenerator(image_shape, latent_dim, width, num_classes),
            dcgan_discriminator(image_shape, width, num_classes, d_norm),
        )
    raise ValueError(f"unknown GAN net {net!r}; choose 'mlp' or 'dcgan'")
