"""GenDataModule: what every DataModule of the project shares.

Seed, split fraction, batch size, workers and pin-memory are decided here once, so images and text
behave the same way. Subclasses only fill `self.train_set` / `self.val_set` in `setup()`.
Lightning adds the DistributedSampler under DDP, so nothing here is rank-aware except
`prepare_data`, which Lightning calls on one process per node.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from gen_lightning.errors import UserError


class GenDataModule(L.LightningDataModule):
    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0.0 < val_fraction < 1.0:
            raise UserError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        # Pinned memory only helps host->GPU copies; default it on exactly when CUDA is usable.
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None

    def _loader(self, dataset: Optional[Dataset], shuffle: bool, drop_last: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # A seeded generator makes the shuffle order a function of `seed` (and the epoch).
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        # drop_last keeps every step's batch the same size: BatchNorm and GAN losses prefer it.
        return self._loader(self.train_set, shuffle=True, drop_last=len(self.train_set) >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
