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
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from gen_lightning.errors import UserError


class EpochShuffleSampler(RandomSampler):
    """A shuffle whose order is a function of (seed, epoch) alone, like DistributedSampler's.

    A chained generator makes epoch k's order depend on every draw before it; measured: a run resumed
    in epoch 0 then saw another epoch-1 order than the uninterrupted run. Lightning calls set_epoch,
    and under DDP replaces this sampler by its DistributedSampler (it is a RandomSampler), which
    orders by (seed, epoch) the same way.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


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
        # Stateful: Lightning saves the loader's position in every checkpoint, so a
        # run resumed mid-epoch sees the very batches it would have seen, not the epoch's start again.
        return StatefulDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(dataset, self.seed) if shuffle else None,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # Its own generator for the workers' base seed: drawn from the global one, each new epoch
            # would shift the model's noise (GAN z, VAE eps, dropout) and a resumed run would diverge.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        # drop_last keeps every step's batch the same size: BatchNorm and GAN losses prefer it.
        return self._loader(self.train_set, shuffle=True, drop_last=len(self.train_set) >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
