"""What callbacks and strategies may ask of a LightningModule, declared once.

A callback that logs image grids needs `sample`; a strategy that wraps networks one by one needs the
module to name them. Each such capability is a `typing.Protocol` here, checked with `isinstance`, so a
family states what it offers by implementing the methods and nobody probes with `getattr`. A family
claims its capabilities in `tests/test_capabilities.py`, which checks every claim against these.

The protocols are `runtime_checkable`: `isinstance` checks that the attributes exist (not their
signatures), which is what the callers need to choose a path; the signatures below are the contract.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class TrainsNetworksInTurn(Protocol):
    """Several networks, each trained by its own optimizer in its own backward (the GAN's G and D).

    Strategies give each network named here its own DDP wrapper or DeepSpeed engine; the module calls
    `gen_lightning.strategies.ddp_unit(self, name)` exactly when it trains that network."""

    ddp_submodules: tuple[str, ...]


@runtime_checkable
class SamplesImages(Protocol):
    """Draws images from the model: [n, C, H, W] in [-1, 1]."""

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor: ...


@runtime_checkable
class SamplesImagesByClass(Protocol):
    """Draws images of given classes (conditional GAN/VAE); `num_classes` > 0 when it is conditional."""

    num_classes: int

    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               labels: Optional[torch.Tensor] = None) -> torch.Tensor: ...


@runtime_checkable
class Reconstructs(Protocol):
    """Maps images to their reconstructions (auto-encoders), both in [-1, 1]. `labels` are the class
    indices of `x`, which a class-conditional model needs; None for an unconditional one."""

    def reconstruct(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor: ...


@runtime_checkable
class GeneratesText(Protocol):
    """Continues a text prompt (language models); returns one string per sample."""

    def generate_text(self, prompt: str = "", max_new_tokens: int = 200, num_samples: int = 1,
                      temperature: float = 0.8, top_k: Optional[int] = None, top_p: Optional[float] = None,
                      stop_at_eot: bool = True, use_cache: bool = True,
                      generator: Optional[torch.Generator] = None) -> list[str]: ...


@runtime_checkable
class TranslatesText(Protocol):
    """Generates a target text for each source text (encoder-decoder models)."""

    def generate_targets(self, sources: Sequence[str], max_new_tokens: int = 64,
                         generator: Optional[torch.Generator] = None) -> list[str]: ...


@runtime_checkable
class KeepsValidationExamples(Protocol):
    """(source, reference, generated) texts of the latest validation's first batch (this rank's), kept
    from the outputs the validation metrics were computed on: a table of them costs no extra forward."""

    validation_examples: list[tuple[str, str, str]]


@runtime_checkable
class ReportsFlops(Protocol):
    """Model FLOPs of one training step on `batch` on this device (forward + backward of every network it
    trains), for FLOPs/s and MFU; see gen_lightning/models/flops.py."""

    def flops_per_batch(self, batch) -> int: ...


@runtime_checkable
class NamesCheckpointMetric(Protocol):
    """The logged metric that picks the best checkpoint: (key, "min" | "max"), or None for none."""

    checkpoint_metric: Optional[tuple[str, str]]


# -- what a callback may ask of a strategy -------------------------------------------------------------------------
@runtime_checkable
class SkipsNonFiniteSteps(Protocol):
    """A strategy whose optimizer steps skip updates with non-finite gradients themselves (DeepSpeed's engines):
    `skipped_steps()` is the number skipped so far, summed over its engines, the same on every rank."""

    def skipped_steps(self) -> int: ...
