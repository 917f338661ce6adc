"""Callbacks shared by every model family."""

from gen_lightning.callbacks.checkpoint import GenCheckpoint
from gen_lightning.callbacks.config_saver import RunConfigSaver

__all__ = ["GenCheckpoint", "RunConfigSaver"]
