"""Reference (real-image) statistics: what generated images are compared against.

File layout: a NumPy `.npz` with `mu` [D] and `sigma` [D, D], exactly what pytorch-fid writes
(`np.savez(path, mu=mu, sigma=sigma)`), so published statistics load as they are. Files written here
add `num_samples`, `extractor` (the fingerprint of the feature weights, so statistics are never
mixed across extractors) and `kid_features` (a bounded random subset of the real features: KID
compares sets of features, not moments). A file without `kid_features` still gives FID and IS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from gen_lightning.errors import UserError


@dataclass
class ReferenceStats:
    mu: np.ndarray  # [D] float64
    sigma: np.ndarray  # [D, D] float64, unbiased (n - 1) covariance, as numpy.cov and pytorch-fid
    num_samples: Optional[int] = None
    kid_features: Optional[np.ndarray] = None  # [N, D] float32
    extractor: Optional[str] = None

    @property
    def num_features(self) -> int:
        return int(self.mu.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic write: an interrupted run never leaves a truncated file that later runs would trust."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {}
        if self.num_samples is not None:
            extra["num_samples"] = np.int64(self.num_samples)
        if self.kid_features is not None:
            extra["kid_features"] = self.kid_features.astype(np.float32)
        if self.extractor is not None:
            extra["extractor"] = np.array(self.extractor)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, mu=self.mu, sigma=self.sigma, **extra)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReferenceStats":
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"reference statistics '{path}' do not exist; give an .npz with mu and sigma (pytorch-fid layout)"
            )
        try:
            with np.load(path) as f:
                mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
                n = int(f["num_samples"]) if "num_samples" in f else None
                kid = np.asarray(f["kid_features"], np.float32) if "kid_features" in f else None
                extractor = str(f["extractor"]) if "extractor" in f else None
        except (KeyError, ValueError, OSError) as err:
            raise UserError(
                f"reference statistics '{path}' are unreadable ({err}); expected an .npz with mu and sigma"
            ) from None
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise UserError(
                f"reference statistics '{path}': mu must be [D] and sigma [D, D], got {mu.shape} and {sigma.shape}"
            )
        return cls(mu, sigma, n, kid, extractor)
