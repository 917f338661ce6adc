"""What the image model families (GAN, VAE) share: checking that the data fits the model."""

from __future__ import annotations

import lightning as L

from gen_lightning.errors import UserError


def check_image_shape(module: L.LightningModule, expected: tuple[int, int, int]) -> None:
    """Fail before training, with the fix, when the DataModule's images do not fit the model's nets."""
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    shape = getattr(datamodule, "image_shape", None)
    if shape is not None and tuple(shape) != tuple(expected):
        c, s, _ = shape
        raise UserError(
            f"the data yields images of shape {tuple(shape)} but the model expects {tuple(expected)}; "
            f"set --model.channels {c} --model.image_size {s} (or change data.image_size/channels)"
        )
