"""What callbacks and strategies may ask of a LightningModule, declared once.

A callback that logs image grids needs `sample`; a strategy that wraps networks one by one needs the
module to name them. Each such capability is a `typing.Protocol` here, checked with `isinstance`, so a
family states what it offers by implementing the methods and nobody probes with `getattr`. A family
claims its capabilities in `tests/test_capabilities.py`, which checks every claim against these.

The protocols are `runtime_checkable`: `isinstance` checks that the attributes exist (not their
signatures), which is what the callers need to choose a path; the signatures below are the contract.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class TrainsNetworksInTurn(Protocol):
    """Several networks, each trained by its own optimizer in its own backward (the GAN's G and D).

    Strategies that implement `WrapsNetworks` give each network named here its own DDP wrapper or DeepSpeed
    engine; the module calls `network_unit(self, name)` exactly when it trains that network. The contract goes
    one way: the module declares, the strategy reads; neither writes into the other."""

    ddp_submodules: tuple[str, ...]


@runtime_checkable
class NamesGradientClip(Protocol):
    """A module that clips its gradients itself (manual optimization: Lightning's `gradient_clip_val` does not
    apply), by norm, to `gradient_clip` (0: no clipping). A strategy whose engines clip inside their own step
    (DeepSpeed) reads it from here, where Lightning's clip_gradients would be a no-op."""

    gradient_clip: float


@runtime_checkable
class SamplesImages(Protocol):
    """Draws images from the model: [n, C, H, W] in [-1, 1]."""

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor: ...


@runtime_checkable
class SamplesImagesByClass(Protocol):
    """Draws images of given classes (conditional GAN/VAE); `num_classes` > 0 when it is conditional."""

    num_classes: int

    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor: ...


@runtime_checkable
class Reconstructs(Protocol):
    """Maps images to their reconstructions (auto-encoders), both in [-1, 1]. `labels` are the class
    indices of `x`, which a class-conditional model needs; None for an unconditional one."""

    def reconstruct(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor: ...


@runtime_checkable
class GeneratesText(Protocol):
    """Continues a text prompt (language models); returns one string per sample."""

    def generate_text(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        num_samples: int = 1,
        temperature: float = 0.8,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        stop_at_eot: bool = True,
        use_cache: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> list[str]: ...


@runtime_checkable
class TranslatesText(Protocol):
    """Generates a target text for each source text (encoder-decoder models)."""

    def generate_targets(
        self, sources: Sequence[str], max_new_tokens: int = 64, generator: Optional[torch.Generator] = None
    ) -> list[str]: ...


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


@runtime_checkable
class ShowsOnProgressBar(Protocol):
    """Training values the progress bar shows: {shown name: logged key}. The bar reads them from the logged
    values on logging steps only (callbacks/progress_bar.py): a `self.log(..., prog_bar=True)` in a training
    step is turned into a Python number by Lightning at every batch end, a host-device sync per step."""

    progress_bar_values: dict[str, str]


# -- what a model or callback may ask of a DataModule ------------------------------------------------------------
@runtime_checkable
class YieldsImages(Protocol):
    """Image data: `image_shape` is (C, H, W) of every batch (the nets are built for it)."""

    image_shape: tuple[int, int, int]


@runtime_checkable
class CountsClasses(Protocol):
    """Labelled data: `num_classes` classes, labels in [0, num_classes)."""

    num_classes: int


@runtime_checkable
class HasFullDataset(Protocol):
    """Every real item (train and validation), for reference statistics (FID of real vs generated)."""

    def full_dataset(self): ...


@runtime_checkable
class HasVocabulary(Protocol):
    """Token data: ids in [0, vocab_size) (the model's embedding must be at least this big)."""

    vocab_size: int


@runtime_checkable
class CutsBlocks(Protocol):
    """Token data cut into windows of `block_size` tokens (the model's context must hold one)."""

    block_size: int


@runtime_checkable
class HasTokenizer(Protocol):
    """Text data with the tokenizer that made its ids (None before `setup`); the model keeps its JSON so that a
    checkpoint decodes on its own."""

    tokenizer: object


# -- what a callback may ask of a strategy -------------------------------------------------------------------------
@runtime_checkable
class SkipsNonFiniteSteps(Protocol):
    """A strategy whose optimizer steps skip updates with non-finite gradients themselves (DeepSpeed's engines):
    `skipped_steps()` is the number skipped so far, summed over its engines, the same on every rank."""

    def skipped_steps(self) -> int: ...


@runtime_checkable
class WrapsNetworks(Protocol):
    """A strategy that wraps each network of a `TrainsNetworksInTurn` module on its own (a DDP wrapper or a
    DeepSpeed engine per network): `unit_for(name)` is what to call to train that network, None when unwrapped."""

    def unit_for(self, name: str) -> Optional[torch.nn.Module]: ...


def implements(obj: Any, protocol: type) -> bool:
    """`isinstance(obj, protocol)` for a protocol made of methods only, decided once per class: a runtime Protocol
    check walks the protocol's members every time (3-7 us), and the training step asks some several times a batch
    (the strategy's, per optimizer step). Methods live on the class, so the class decides."""
    return _class_implements(type(obj), protocol)


@functools.lru_cache(maxsize=None)
def _class_implements(cls: type, protocol: type) -> bool:
    return issubclass(cls, protocol)  # TypeError for a protocol with data members: use isinstance for those


def network_unit(module: torch.nn.Module, name: str) -> torch.nn.Module:
    """The network `name` of `module` as it must be called to train it: its strategy's unit (a DDP wrapper, a
    DeepSpeed engine) when the strategy wraps networks one by one, the network itself otherwise."""
    trainer = module._trainer  # None: a LightningModule outside a Trainer
    unit = (
        trainer.strategy.unit_for(name) if trainer is not None and implements(trainer.strategy, WrapsNetworks) else None
    )
    return unit if unit is not None else module.get_submodule(name)
