"""ClassifierModule: a small CNN trained on the same DataModule, used as the evaluator of image models.

Inception features describe ImageNet photos; on 28x28 digits they are a poor judge and their weights
must be downloaded. A classifier trained on the dataset itself is the usual practice for MNIST-like
data: its penultimate layer gives FID/KID features and its logits give the Inception Score.

    gen-lightning fit --config configs/evaluator/digits_classifier.yaml

trains it and, at the end of fit, writes `export_path` (default `data/evaluators/digits-28.pt`): the
net's weights plus what is needed to rebuild it. `gen_lightning.metrics.classifier_features` loads that
file (and trains it with the same defaults when it is missing).

Logged: train/loss, val/loss, val/acc (epoch means weighted by batch size, reduced across ranks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from gen_lightning.errors import check_learning_rates
from gen_lightning.hook_dispatch import PlainHookName
from gen_lightning.metrics.means import WeightedMeans
from gen_lightning.models.image_family import check_image_shape

# Epochs of the reference recipe; configs/evaluator/digits_classifier.yaml uses the same number.
DEFAULT_EPOCHS = 15


class SmallCNN(nn.Module):
    """conv32-pool-conv64-pool-fc128-fc(classes): ~99% on digits, trains in seconds on a CPU."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            # A fixed 4x4 grid makes the head independent of the image size (8, 28, 32, 64, ...).
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: what FID/KID compare."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ClassifierModule(PlainHookName, L.LightningModule):
    checkpoint_metric = ("val/acc", "max")

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        feature_dim: int = 128,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        max_shift: int = 2,
        export_path: Optional[str] = None,
    ) -> None:
        """
        Args:
            image_size: side of the (square) images; linked from data.image_size by the CLI.
            channels: image channels; linked from data.channels by the CLI.
            num_classes: classes of the dataset (the output layer's size).
            feature_dim: width of the penultimate layer (the FID/KID feature size).
            lr: Adam learning rate.
            weight_decay: Adam's L2 weight decay.
            max_shift: random translation of training images by up to this many pixels (augmentation).
            export_path: where to write the trained evaluator at the end of fit (None: not written).
        """
        super().__init__()
        check_learning_rates(lr=lr)
        self.save_hyperparameters()
        self.image_shape = (channels, image_size, image_size)
        self.net = SmallCNN(channels, num_classes, feature_dim)
        self.val_means = WeightedMeans("val/loss", "val/acc")  # exact under DDP (metrics/means.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        """Translate the whole batch by one random offset: cheap augmentation that helps on 1.6k images."""
        s = self.hparams.max_shift
        if s <= 0:
            return x
        dx, dy = torch.randint(-s, s + 1, (2,)).tolist()
        padded = F.pad(x, (s, s, s, s), value=-1.0)  # -1 is the background of [-1, 1] images
        h, w = x.shape[-2:]
        return padded[..., s + dy : s + dy + h, s + dx : s + dx + w]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(self._shift(x)), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]  # (images, labels, index)
        logits = self(x)
        n = x.shape[0]
        self.val_means.log(
            self,
            {"val/loss": F.cross_entropy(logits, y), "val/acc": (logits.argmax(1) == y).float().mean()},
            n,
            prog_bar=("val/acc",),
        )

    def setup(self, stage: str) -> None:
        check_image_shape(self, self.image_shape)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.OneCycleLR(
                    opt, max_lr=self.hparams.lr, total_steps=max(1, int(steps))
                ),
                "interval": "step",
            },
        }

    def on_fit_end(self) -> None:
        if self.hparams.export_path and self.trainer.is_global_zero:
            acc = self.trainer.callback_metrics.get("val/acc")
            save_evaluator(self, self.hparams.export_path, None if acc is None else float(acc))

    # -- the exported evaluator -------------------------------------------------------------------
    def export_dict(self, val_acc: Optional[float]) -> dict:
        hp = self.hparams
        return {
            "format": "gen-lightning-evaluator/1",
            "net": {"channels": hp.channels, "num_classes": hp.num_classes, "feature_dim": hp.feature_dim},
            "image_size": hp.image_size,
            "val_acc": val_acc,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }


def save_evaluator(module: ClassifierModule, path: str | os.PathLike, val_acc: Optional[float]) -> Path:
    """Write atomically: a run killed mid-write never leaves a truncated evaluator behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(module.export_dict(val_acc), tmp)
    os.replace(tmp, path)
    return path


def load_evaluator_net(path: str | os.PathLike) -> tuple[SmallCNN, dict]:
    """The trained net (eval mode, no grads) and the exported metadata."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = SmallCNN(**blob["net"])
    net.load_state_dict(blob["state_dict"])
    net.eval().requires_grad_(False)
    return net, {k: v for k, v in blob.items() if k != "state_dict"}
