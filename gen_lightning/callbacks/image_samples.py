"""ImageSamples: a grid of samples from fixed noise every N steps, to the logger and as PNG files.

Works for any LightningModule with `sample(n, generator=...) -> images in [-1, 1]` (GAN, VAE). The
noise is fixed by seeding the `generator` the same way each time, so consecutive grids show the same
latent points as training moves them. When the module also has `reconstruct(x)` (VAE), a second grid
shows held-out images (the first validation batch) above their reconstructions. A class-conditional
model (`num_classes > 0`, capabilities.SamplesImagesByClass) gets one row per class: `nrow` samples of
class 0 in the first row, of class 1 in the second, ... (num_samples is then num_classes x nrow); its
reconstructions are decoded with the held-out images' own labels.

Files: `<run dir>/samples/samples_step0000123.png` (and `reconstructions_step...png`), plus the same at
the end of training. Loggers with `log_image` (W&B) receive the grids as uint8 pixels — the same bytes as
the PNG files: wandb casts a float array to uint8 without scaling, so a [0, 1] grid arrived all black.
Steps are the logging step (callbacks/logging_step.py): a grid sits on the same step as the losses of
the batch that drew it, for a GAN too. Runs on global rank 0 only; sampling there uses the plain
networks, never a collective (unless the weights are sharded).
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torchvision.utils import make_grid

from gen_lightning.capabilities import Reconstructs, SamplesImagesByClass
from gen_lightning.callbacks.logging_step import logging_step
from gen_lightning.run_dir import run_dir
from gen_lightning.strategies.sharding import parameters_are_sharded


class ImageSamples(Callback):
    def __init__(
        self,
        every_n_steps: int = 500,
        num_samples: int = 64,
        nrow: int = 8,
        seed: int = 0,
        reconstructions: bool = True,
    ) -> None:
        """
        Args:
            every_n_steps: a grid every this many training batches (the logging step, the x-axis of the
                losses; for a GAN one batch = n_critic + 1 optimizer steps); 0 = only at the end.
            num_samples: images per grid.
            nrow: images per row of the grid (a class-conditional model: one class per row).
            seed: seed of the fixed noise.
            reconstructions: also log input/reconstruction grids for modules with `reconstruct(x)`.
        """
        super().__init__()
        if every_n_steps < 0 or num_samples < 1 or nrow < 1:
            raise ValueError("every_n_steps must be >= 0, num_samples and nrow >= 1")
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed
        self.reconstructions = reconstructions
        self._last_logged_step = -1
        self._held_out: Optional[torch.Tensor] = None
        self._held_out_labels: Optional[torch.Tensor] = None

    # -- Lightning hooks --------------------------------------------------------------------------
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        # Keep the first held-out batch we see (the sanity check's, usually) as the reconstruction input.
        if self._held_out is None and batch_idx == 0 and dataloader_idx == 0:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            self._held_out = images[: self.num_samples].detach().cpu()
            if isinstance(batch, (list, tuple)) and len(batch) > 1:
                self._held_out_labels = batch[1][: self.num_samples].detach().cpu()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = logging_step(trainer) + 1  # batches done, this one included
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_logged_step:
            self.log_grids(trainer, pl_module, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = logging_step(trainer)  # after the loop: the counter has counted every batch, = batches done
        if step != self._last_logged_step:
            self.log_grids(trainer, pl_module, step)

    # -- the grids ----------------------------------------------------------------------------------
    def log_grids(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """Grids drawn now; `step` counts the training batches done (file names and the logger's axis)."""
        self._last_logged_step = step
        # Sharded weights (ZeRO-3, FSDP): sampling is a collective, every rank runs it; rank 0 alone writes.
        if not trainer.is_global_zero and not parameters_are_sharded(trainer):
            return
        was_training = pl_module.training
        pl_module.eval()  # batch norm from running statistics: samples independent of the batch
        try:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(self.seed)
                if _conditional(pl_module):  # one row per class
                    labels = torch.arange(pl_module.num_classes).repeat_interleave(self.nrow)
                    samples = pl_module.sample(len(labels), generator=generator, labels=labels)
                else:
                    samples = pl_module.sample(self.num_samples, generator=generator)
                grids = {"samples": self.grid(samples)}
                if self.reconstructions and isinstance(pl_module, Reconstructs) and self._held_out is not None:
                    full_rows = len(self._held_out) // self.nrow * self.nrow
                    inputs = self._held_out[: full_rows or None]
                    labels = self._held_out_labels[: len(inputs)] if _conditional(pl_module) else None
                    recon = pl_module.reconstruct(inputs.to(pl_module.device), labels).cpu()
                    grids["reconstructions"] = self.grid(_interleave_rows(inputs, recon, self.nrow))
        finally:
            pl_module.train(was_training)
        if not trainer.is_global_zero:
            return
        folder = run_dir(trainer) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        for name, grid in grids.items():
            pixels = to_uint8_hwc(grid)
            Image.fromarray(pixels).save(folder / f"{name}_step{step:07d}.png")
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):
                    # Lightning's logging step of the batch that drew the grid is one less than the batches done.
                    logger.log_image(key=f"samples/{name}", images=[pixels], step=max(step - 1, 0))

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [-1, 1] -> one [C, H', W'] image in [0, 1]."""
        return make_grid(images.detach().float().cpu(), nrow=self.nrow, normalize=True, value_range=(-1, 1))


def to_uint8_hwc(grid: torch.Tensor):
    """[C, H, W] in [0, 1] -> [H, W, C] uint8 numpy: what torchvision's save_image writes, rounded the same way."""
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()


def _conditional(module: L.LightningModule) -> bool:
    return isinstance(module, SamplesImagesByClass) and module.num_classes > 0


def _interleave_rows(inputs: torch.Tensor, recon: torch.Tensor, nrow: int) -> torch.Tensor:
    """Row k of inputs, then row k of reconstructions, ...: each reconstruction sits under its input."""
    rows = [t for pair in zip(inputs.split(nrow), recon.split(nrow)) for t in pair]
    return torch.cat(rows)
