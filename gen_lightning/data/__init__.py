"""The shared DataModule layer: one place for images and text, used by every model family."""

from gen_lightning.data.images import ImageDataModule
from gen_lightning.data.paired import PairedTextDataModule
from gen_lightning.data.text import TextDataModule

__all__ = ["ImageDataModule", "PairedTextDataModule", "TextDataModule"]
