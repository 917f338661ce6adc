"""Helpers shared by the metrics tests and the rank scripts they start (test_metrics_ddp.py and
test_perplexity_ddp.py run `python worker.py RANK ...` in the repository, and each rank imports its data from
here): a cheap feature extractor, the images and scores of the FID/KID/IS DDP test, the batches of the
perplexity DDP test. Two ranks are started by tests/helpers.py:run_two_ranks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gen_lightning.metrics import FeatureExtractor, GenerativeScores


class LinearFeatures(FeatureExtractor):
    """A fixed random projection of the pixels: a cheap, deterministic extractor for statistics tests."""

    name = "linear"

    def __init__(self, pixels: int, num_features: int = 8, num_logits: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(pixels, num_features, generator=g) / pixels**0.5)
        self.register_buffer("v", torch.randn(num_features, num_logits, generator=g))
        self.num_features, self.num_logits = num_features, num_logits

    def features_and_logits(self, images):
        features = (images.flatten(1).float() / 255.0) @ self.w
        return features, features @ self.v


def make_data():
    """The FID/KID/IS DDP test's images: 60 real and 37 fake 1x6x6 images in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    real = torch.rand(60, 1, 6, 6, generator=g) * 2 - 1
    fake = (torch.rand(37, 1, 6, 6, generator=g) * 2 - 1) * 0.7 + 0.2
    return real, fake


def make_scores() -> GenerativeScores:
    """The FID/KID/IS DDP test's scores: the same on every rank and in the single process."""
    return GenerativeScores(LinearFeatures(36), kid_subsets=20, kid_subset_size=30, is_splits=3, seed=0)


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four batches of different sizes; the last one is both small and much easier (lower loss)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for b, t, scale in ((4, 16, 1.0), (3, 16, 1.0), (5, 16, 1.0), (1, 9, 6.0)):
        targets = torch.randint(0, 50, (b, t), generator=g)
        logits = torch.randn(b, t, 50, generator=g) + scale * F.one_hot(targets, 50)
        out.append((logits, targets))
    return out


def batch_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"), targets.numel()
