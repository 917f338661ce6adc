"""Callbacks shared by every model family."""

from gen_lightning.callbacks.checkpoint import GenCheckpoint
from gen_lightning.callbacks.config_saver import RunConfigSaver
from gen_lightning.callbacks.generative_metrics import GenerativeMetrics
from gen_lightning.callbacks.gpu_memory import GPUMemory
from gen_lightning.callbacks.image_samples import ImageSamples
from gen_lightning.callbacks.lr_monitor import GenLearningRateMonitor
from gen_lightning.callbacks.optuna_pruning import OptunaPruning
from gen_lightning.callbacks.text_samples import TextSamples
from gen_lightning.callbacks.throughput import GenThroughput
from gen_lightning.callbacks.translation_samples import TranslationSamples

__all__ = [
    "GPUMemory",
    "GenCheckpoint",
    "GenerativeMetrics",
    "GenLearningRateMonitor",
    "GenThroughput",
    "ImageSamples",
    "OptunaPruning",
    "RunConfigSaver",
    "TextSamples",
    "TranslationSamples",
]
