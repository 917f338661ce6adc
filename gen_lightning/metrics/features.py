"""Feature extractors for FID / KID / IS: one interface, two implementations (classifier, inception).

Both follow torchmetrics' contract for a pluggable `feature=` module, so either can also be handed to
`FrechetInceptionDistance(feature=...)` & co directly: `forward(uint8 images [B, C, H, W]) -> [B, D]`
and a `num_features` attribute. On top of it, `features_and_logits` returns the FID/KID features and
the IS logits from ONE forward pass (GenerativeScores uses it so each image goes through the net once).
"""

from __future__ import annotations

import torch
from torch import nn


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255]: what a generated image is once saved as a PNG, and the
    input every FID implementation (torch-fidelity, pytorch-fid, torchmetrics) quantises to."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class FeatureExtractor(nn.Module):
    """Base: frozen, always in eval mode, uint8 in, features out."""

    name: str = "extractor"
    num_features: int
    num_logits: int

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[0]

    def train(self, mode: bool = True) -> "FeatureExtractor":
        # An evaluator never trains: Lightning's model.train() must not switch on its dropout.
        return super().train(False)

    @property
    def fingerprint(self) -> str:
        """Identifies the weights: reference statistics computed with other weights are not reused."""
        return self.name


class ClassifierFeatures(FeatureExtractor):
    """A dataset classifier (gen_lightning.models.classifier): penultimate layer + logits."""

    name = "classifier"

    def __init__(self, net: nn.Module, image_shape: tuple[int, int, int], fingerprint: str) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.image_shape = tuple(image_shape)
        self.num_features = int(net.feature_dim)
        self.num_logits = int(net.head[-1].out_features)
        self._fingerprint = fingerprint

    @property
    def fingerprint(self) -> str:
        return f"classifier-{self._fingerprint}"

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images (see to_uint8), got {images.dtype}")
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"the classifier evaluator was trained on images of shape {self.image_shape}, got {tuple(images.shape[1:])}"
            )
        x = images.float() / 127.5 - 1.0  # back to the [-1, 1] range the classifier was trained on
        features = self.net.features(x)
        return features, self.net.head(features)
