"""GenerativeScores: FID, KID and IS of generated images, from one feature pass per image.

The statistics are torchmetrics' (FrechetInceptionDistance, KernelInceptionDistance, InceptionScore):
they own the states and the cross-rank reduction. Each image goes through the feature extractor
once, here; the torchmetrics objects get the ready features through an identity `feature=` module
(`_Precomputed`), so FID/KID features and IS logits do not cost two forward passes.

Memory (see docs/metrics.md): FID keeps running sums only (sum [D] + sum of outer products [D, D],
float64, per side): flat in the number of images. KID keeps every feature ([N, D] per side) and IS
every logit vector ([N, classes]): bounded by the number of generated samples per evaluation and,
for the real side of KID, by `ReferenceStats.kid_features`.

DDP: images are split across ranks; `compute()` gives the same global value on every rank:
- FID sums and counts are summed across ranks by torchmetrics (`dist_reduce_fx="sum"`).
- KID/IS keep lists gathered with one all_gather per list element; ranks with different numbers of
  update() calls would issue different numbers of collectives (a hang), so each list is first
  concatenated into one tensor per rank (`_one_tensor_per_rank`).
- Loaded reference statistics live on rank 0 for FID (other ranks hold zeros, so the sum is exact),
  and are sharded across ranks for KID (the gather reassembles them once).
- KID subsets and IS splits are random: compute runs in a forked RNG with a fixed seed, so every
  rank gets the same number and the training RNG is untouched.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torchmetrics.image import FrechetInceptionDistance, InceptionScore, KernelInceptionDistance

from gen_lightning.errors import UserError
from gen_lightning.metrics.features import FeatureExtractor, to_uint8
from gen_lightning.metrics.reference import ReferenceStats

METRICS = ("fid", "kid", "is")


class _Precomputed(nn.Module):
    """Identity `feature=` module: the extractor already ran (once, for FID, KID and IS together)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _one_tensor_per_rank(metric: nn.Module, names: Iterable[str], width: int) -> None:
    for name in names:
        chunks = getattr(metric, name)
        setattr(metric, name, [torch.cat(chunks) if chunks else torch.zeros(0, width, device=metric.device)])


class GenerativeScores(nn.Module):
    def __init__(
        self,
        extractor: FeatureExtractor,
        metrics: Iterable[str] = METRICS,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.metrics = tuple(metrics)
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise UserError(f"unknown generative metrics {sorted(unknown)}; choose from {list(METRICS)}")
        self.extractor = extractor
        d = extractor.num_features
        with warnings.catch_warnings():
            # "will save all extracted features": known, and bounded by num_samples (docs/metrics.md).
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.fid = FrechetInceptionDistance(feature=_Precomputed(d), reset_real_features=False)
            self.kid = KernelInceptionDistance(
                feature=_Precomputed(d), subsets=kid_subsets, subset_size=kid_subset_size, reset_real_features=False
            )
            self.inception_score = InceptionScore(feature=_Precomputed(extractor.num_logits), splits=is_splits)
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.kid_available = "kid" in self.metrics

    # -- feeding images ---------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] (float) or uint8 -> (FID/KID features, IS logits)."""
        if images.dtype != torch.uint8:
            images = to_uint8(images)
        return self.extractor.features_and_logits(images.to(self.fid.device))

    def update(self, images: torch.Tensor, real: bool) -> None:
        self.update_features(*self.features(images), real=real)

    def update_features(self, features: torch.Tensor, logits: torch.Tensor | None, real: bool) -> None:
        """Features ([B, D]) and IS logits already computed by the extractor (logits unused for real images)."""
        self.fid.update(features, real=real)
        if self.kid_available:
            self.kid.update(features, real=real)
        if not real and "is" in self.metrics:
            self.inception_score.update(logits)

    def reset_fake(self) -> None:
        """Forget the generated side; the real side stays (reset_real_features=False)."""
        self.fid.reset()
        self.kid.reset()
        self.inception_score.reset()

    # -- results ----------------------------------------------------------------------------------
    def compute(self) -> dict[str, float]:
        out = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if "fid" in self.metrics:
                out["fid"] = float(self.fid.compute())
            if self.kid_available:
                _one_tensor_per_rank(self.kid, ("real_features", "fake_features"), self.extractor.num_features)
                self.kid.subset_size = self._kid_subset_size()
                mean, std = self.kid.compute()
                out["kid"] = float(mean)
                if self.kid.subsets > 1:  # the spread of one subset is not a number
                    out["kid_std"] = float(std)
            if "is" in self.metrics:
                _one_tensor_per_rank(self.inception_score, ("features",), self.extractor.num_logits)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # splits=1: std is nan
                    mean, std = self.inception_score.compute()
                out["is"] = float(mean)
                splits = self.inception_score.splits
                if splits > 1:
                    # torchmetrics gives the sample std (n - 1) of the per-split scores; published IS values
                    # (Salimans et al.'s code, torch-fidelity) use the population std (n): report that one.
                    out["is_std"] = float(std) * ((splits - 1) / splits) ** 0.5
        return out

    def _kid_subset_size(self) -> int:
        """KID's subsets must fit in both sides: the smaller global count caps the configured size."""
        counts = torch.tensor([len(self.kid.real_features[0]), len(self.kid.fake_features[0])], device=self.fid.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        smallest = int(counts.min())
        if smallest < 2:
            raise UserError(f"KID needs at least 2 real and 2 generated images, got {counts.tolist()}")
        return min(self.kid_subset_size, smallest)

    # -- reference statistics ---------------------------------------------------------------------
    def real_statistics(self, max_kid_features: int = 5000) -> ReferenceStats:
        """This process's real-side states as ReferenceStats (call where the real images were fed)."""
        n = int(self.fid.real_features_num_samples)
        if n < 2:
            raise UserError(f"reference statistics need at least 2 real images, got {n}")
        mean = self.fid.real_features_sum / n
        cov = (self.fid.real_features_cov_sum - n * torch.outer(mean, mean)) / (n - 1)
        kid = None
        if self.kid.real_features:
            feats = torch.cat(self.kid.real_features)
            if len(feats) > max_kid_features:  # a seeded random subset; all of them, in order, otherwise
                keep = torch.randperm(len(feats), generator=torch.Generator().manual_seed(self.seed))[:max_kid_features]
                feats = feats[keep.sort().values.to(feats.device)]
            kid = feats.cpu().numpy()
        return ReferenceStats(mean.cpu().numpy(), cov.cpu().numpy(), n, kid, self.extractor.fingerprint)

    def load_reference(self, stats: ReferenceStats, rank: int = 0, world_size: int = 1) -> None:
        """Install real-side statistics so that the cross-rank reduction reproduces them exactly once."""
        d = self.extractor.num_features
        if stats.num_features != d:
            raise UserError(
                f"reference statistics have {stats.num_features} features but the {self.extractor.name} extractor "
                f"gives {d}; use statistics computed with the same extractor"
            )
        if stats.extractor is not None and stats.extractor != self.extractor.fingerprint:
            raise UserError(
                f"reference statistics were computed with '{stats.extractor}', not '{self.extractor.fingerprint}'; "
                f"delete the file to recompute them"
            )
        fid, device = self.fid, self.fid.device
        # Any n >= 2 reproduces mu and sigma exactly; published files may not say how many images they saw.
        n = stats.num_samples or 50_000
        mu = torch.as_tensor(stats.mu, dtype=torch.float64, device=device)
        sigma = torch.as_tensor(stats.sigma, dtype=torch.float64, device=device)
        on_this_rank = rank == 0
        fid.real_features_sum = mu * n if on_this_rank else torch.zeros_like(mu)
        fid.real_features_cov_sum = (
            ((n - 1) * sigma + n * torch.outer(mu, mu)) if on_this_rank else torch.zeros_like(sigma)
        )
        fid.real_features_num_samples = torch.tensor(n if on_this_rank else 0, dtype=torch.long, device=device)
        self.kid.real_features = []
        self.kid_available = "kid" in self.metrics and stats.kid_features is not None
        if self.kid_available:
            shard = np.array_split(stats.kid_features, world_size)[rank]
            self.kid.real_features = [torch.as_tensor(shard, dtype=torch.float32, device=device)]
