"""ImageDataModule: every image source behind one interface.

Batches are `(images, labels)`: images float in [-1, 1] with shape [B, C, H, W], labels int64 class
indices (conditional models use them, the others ignore them); validation batches add each item's
index in the validation set, `(images, labels, index)`. Sources:

- `digits`    scikit-learn's bundled 1797 real 8x8 digits, resized: works with no files and no network.
- `mnist`     torchvision MNIST (idx files under `root/MNIST/raw`, downloaded when `download`).
- `cifar10`   torchvision CIFAR-10 (`root/cifar-10-batches-py`, downloaded when `download`).
- `folder`    torchvision ImageFolder: `root/<class>/<image>`; corrupt files are named in the error.
- `synthetic` seeded class-dependent blobs: a learnable toy set of any size, for tests and benchmarks.

The whole source is split into train/val by `seed`, so the split is the same on every rank and run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset, random_split

from gen_lightning.data.base import GenDataModule, WithIndex
from gen_lightning.errors import UserError

ImageSource = Literal["digits", "mnist", "cifar10", "folder", "synthetic"]

# Per-source defaults: (channels, image_size). Users may override both.
_DEFAULTS = {
    "digits": (1, 28),
    "mnist": (1, 28),
    "cifar10": (3, 32),
    "folder": (3, 64),
    "synthetic": (1, 28),
}


def load_digits_tensor(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as float images in [-1, 1], shape [1797, 1, S, S], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0) * 2.0 - 1.0
    return images, torch.tensor(digits.target, dtype=torch.long)


def synthetic_blobs(n: int, image_size: int, channels: int, num_classes: int, seed: int):
    """Images with one bright Gaussian blob whose position is set by the class: easy to learn, any size."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    angle = labels.float() / num_classes * 2 * torch.pi
    centre = 0.5 + 0.3 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    centre = centre + 0.03 * torch.randn(n, 2, generator=g)
    coords = (torch.arange(image_size).float() + 0.5) / image_size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    d2 = (xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2
    blob = torch.exp(-d2 / (2 * 0.08**2))
    images = blob[:, None].expand(n, channels, image_size, image_size) * 2.0 - 1.0
    return images.contiguous(), labels


def _checked_pil_loader(path: str):
    """ImageFolder's loader, but a corrupt file is reported by name instead of a PIL traceback."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    # DecompressionBombError: more than 2 x Image.MAX_IMAGE_PIXELS pixels, PIL's guard against a small file
    # that decodes to gigabytes; reported like any other unreadable image.
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"corrupt or unreadable image '{path}' ({err}); remove or replace the file") from None


class ImageDataModule(GenDataModule):
    def __init__(
        self,
        dataset: ImageSource = "digits",
        root: str = "data",
        image_size: Optional[int] = None,
        channels: Optional[int] = None,
        download: bool = True,
        synthetic_size: int = 1024,
        num_classes: int = 10,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
    ) -> None:
        """
        Args:
            dataset: `digits` (scikit-learn's, bundled), `mnist`, `cifar10` (torchvision files under root),
                `folder` (an ImageFolder: one sub-folder of images per class) or `synthetic` (Gaussian blobs).
            root: folder of the downloaded datasets, or the image folder itself for `folder`.
            image_size: side of the square images (resized, centre-cropped); None = the dataset's own
                (28; cifar10 32, folder 64). The model's image_size is linked to it.
            channels: 1 (grey) or 3 (RGB); None = the dataset's own (cifar10, folder: 3). Linked to the model's.
            download: fetch mnist/cifar10 into root when missing (on one process per node).
            synthetic_size: images of the `synthetic` dataset.
            num_classes: classes of the `synthetic` dataset (the others have their own: 10, or the sub-folders).
            batch_size: samples per batch on each process (the global batch is this times the processes).
            val_fraction: share held out for validation, between 0 and 1.
            seed: seed of the train/validation split (and of the synthetic images).
            num_workers: DataLoader worker processes per rank; 0 = load in the training process.
            pin_memory: page-locked batches for faster host-to-GPU copies; None = on exactly when CUDA is usable.
        """
        super().__init__(batch_size, val_fraction, seed, num_workers, pin_memory)
        if dataset not in _DEFAULTS:
            raise UserError(f"data.dataset must be one of {sorted(_DEFAULTS)}, got '{dataset}'")
        default_channels, default_size = _DEFAULTS[dataset]
        self.dataset = dataset
        self.root = Path(root)
        self.image_size = image_size or default_size
        self.channels = channels or default_channels
        self.download = download
        self.synthetic_size = synthetic_size
        self._num_classes = num_classes
        if self.channels not in (1, 3):
            raise UserError(f"data.channels must be 1 or 3, got {self.channels}")
        if self.image_size < 4:
            raise UserError(f"data.image_size must be >= 4, got {self.image_size}")
        # Fail before training when a folder dataset points nowhere: the cheapest useful check.
        if dataset == "folder" and not self.root.is_dir():
            raise UserError(
                f"data.root '{self.root}' does not exist; point it at a folder of class sub-folders of images"
            )

    # -- what models need to know about the data -------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        if self.dataset in ("digits", "mnist", "cifar10"):
            return 10
        if self.dataset == "folder":
            return len([p for p in self.root.iterdir() if p.is_dir()])
        return self._num_classes

    # -- Lightning hooks --------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Runs on one process per node: the only place that downloads.
        if self.dataset in ("mnist", "cifar10") and self.download:
            self._torchvision_dataset(download=True)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        full = self.full_dataset()
        n_val = max(1, int(round(len(full) * self.val_fraction)))
        if len(full) - n_val < 1:
            raise UserError(f"dataset has only {len(full)} images: too few to split off a validation set")
        split = torch.Generator().manual_seed(self.seed)
        self.train_set, val_set = random_split(full, [len(full) - n_val, n_val], generator=split)
        # Validation batches are (images, labels, index): a sample's validation noise follows its index, so
        # val metrics are the same on any number of ranks (models/image_family.py per_sample_noise).
        self.val_set = WithIndex(val_set)

    def full_dataset(self) -> Dataset:
        """The whole source before the train/val split (also used for reference statistics)."""
        if self.dataset == "digits":
            return TensorDataset(*load_digits_tensor(self.image_size))
        if self.dataset == "synthetic":
            return TensorDataset(
                *synthetic_blobs(self.synthetic_size, self.image_size, self.channels, self._num_classes, self.seed)
            )
        return self._torchvision_dataset(download=False)

    def _transform(self):
        from torchvision import transforms as T

        steps = [T.Grayscale(1)] if self.channels == 1 else [T.Lambda(lambda im: im.convert("RGB"))]
        steps += [T.Resize(self.image_size), T.CenterCrop(self.image_size), T.ToTensor(), T.Normalize([0.5], [0.5])]
        return T.Compose(steps)

    def _torchvision_dataset(self, download: bool) -> Dataset:
        from torchvision import datasets

        if self.dataset == "folder":
            try:
                return datasets.ImageFolder(str(self.root), transform=self._transform(), loader=_checked_pil_loader)
            except FileNotFoundError as err:
                raise UserError(f"data.root '{self.root}': {err}") from None
        cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}[self.dataset]
        try:
            # The official train split only: the test split stays untouched for final evaluation.
            return cls(str(self.root), train=True, download=download, transform=self._transform())
        except RuntimeError as err:
            raise UserError(
                f"{self.dataset} not found under '{self.root}' ({err}); set data.download=true with network "
                f"access, or place the original files there (see README 'Datasets')"
            ) from None
        except OSError as err:  # URLError and socket errors derive from OSError
            raise UserError(
                f"could not download {self.dataset} to '{self.root}' ({err}); place the original files there "
                f"or use data.dataset=digits, which needs no network"
            ) from None
