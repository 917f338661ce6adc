"""The standard InceptionV3 evaluator: torch-fidelity's FeatureExtractorInceptionV3, unchanged.

It is the network (TF-ported weights, TF1-style bilinear resize to 299) that published FID/IS/KID
numbers use, so values match torch-fidelity on the same images. torchmetrics' own default wrapper
resizes with antialiasing and gives slightly different numbers; that is why it is not used here.

Its weights are never downloaded at run time: they must already be where torch.hub keeps them
(`<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth`, the file torch-fidelity
itself downloads), or at an explicit `weights_path`. When they are absent, `require_inception_weights`
fails with one line naming the file and the folder, before any training starts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import torch

from gen_lightning.errors import UserError
from gen_lightning.metrics.features import FeatureExtractor

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE
FEATURE_LAYER = "2048"  # pool3: the FID/KID features of every published number
LOGITS_LAYER = "logits_unbiased"  # torch-fidelity's (and torchmetrics') Inception Score input


def default_weights_path() -> Path:
    """Where torch.hub (and so torch-fidelity) looks for the file before downloading it."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def require_inception_weights(weights_path: Optional[str] = None) -> Path:
    """The weights file, or a UserError that says exactly what to put where."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise UserError("the inception extractor needs torch-fidelity; pip install torch-fidelity") from None
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise UserError(f"InceptionV3 weights file '{path}' not found; fix inception_weights ({WEIGHTS_URL})")
        return path
    path = default_weights_path()
    if not path.is_file():
        raise UserError(
            f"InceptionV3 weights not found: place {WEIGHTS_FILE} (torch-fidelity's file, {WEIGHTS_URL}) in "
            f"{path.parent}/ (the torch hub checkpoints dir; TORCH_HOME moves it), or set inception_weights, "
            f"or use extractor=classifier"
        )
    return path


class InceptionFeatures(FeatureExtractor):
    """pool3 (2048) features for FID/KID and unbiased logits (1008) for IS, in one forward pass."""

    name = "inception"
    num_features = 2048
    num_logits = 1008

    def __init__(self, weights_path: Optional[str] = None) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = require_inception_weights(weights_path)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", [FEATURE_LAYER, LOGITS_LAYER], feature_extractor_weights_path=str(path)
        )
        stat = os.stat(path)
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        self._fingerprint = hashlib.sha1(key.encode()).hexdigest()[:8]

    @property
    def fingerprint(self) -> str:
        return f"inception-{self._fingerprint}"

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images (see to_uint8), got {images.dtype}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # grayscale -> RGB, as torch-fidelity's image loaders do
        features, logits = self.net(images)
        return features, logits
