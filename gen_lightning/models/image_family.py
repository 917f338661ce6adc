"""What the image model families (GAN, VAE) share: checking that the data fits the model, class labels, fixed
validation noise."""

from __future__ import annotations

import lightning as L
import torch

from gen_lightning.capabilities import CountsClasses, YieldsImages
from gen_lightning.errors import UserError


def check_image_shape(module: L.LightningModule, expected: tuple[int, int, int]) -> None:
    """Fail before training, with the fix, when the DataModule's images do not fit the model's nets."""
    datamodule = module._trainer.datamodule if module._trainer is not None else None
    shape = datamodule.image_shape if isinstance(datamodule, YieldsImages) else None
    if shape is not None and tuple(shape) != tuple(expected):
        c, s, _ = shape
        raise UserError(
            f"the data yields images of shape {tuple(shape)} but the model expects {tuple(expected)}; "
            f"set --model.channels {c} --model.image_size {s} (or change data.image_size/channels)"
        )


def check_num_classes(module: L.LightningModule, num_classes: int, family: str) -> None:
    """A class-conditional model must know exactly the data's classes (the labels index its one-hot/embedding)."""
    datamodule = module._trainer.datamodule if module._trainer is not None else None
    data_classes = datamodule.num_classes if isinstance(datamodule, CountsClasses) else None
    if num_classes > 0 and data_classes is not None and data_classes != num_classes:
        raise UserError(
            f"the data has {data_classes} classes but model.num_classes is {num_classes}; "
            f"set --model.num_classes {data_classes} (or 0 for an unconditional {family})"
        )


def default_labels(n: int, num_classes: int) -> torch.Tensor:
    """The classes a conditional model draws when none are asked for: 0, 1, ..., num_classes - 1, 0, 1, ..."""
    return torch.arange(n) % num_classes


def per_sample_noise(indices: torch.Tensor, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Standard normal noise [len(indices), *shape] in which row k depends only on `indices[k]` (and `seed`).

    Validation draws its latents (GAN z, VAE eps) this way: a sample gets the same noise whichever rank and
    batch it lands in, so a validation metric is the same on 1 and N processes, and the same at every
    evaluation, so its curve shows the model changing rather than the noise. One small generator per sample:
    ~10 us each, validation only."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + i)) for i in indices.tolist()]
    return torch.stack(rows).to(indices.device) if rows else torch.zeros(0, *shape, device=indices.device)
