"""GenDataModule: what every DataModule of the project shares.

Seed, split fraction, batch size, workers and pin-memory are decided here once, so images and text
behave the same way. Subclasses only fill `self.train_set` / `self.val_set` in `setup()`.
The samplers are rank-aware here rather than left to Lightning: its DistributedSampler pads validation
sets with repeated items (every validation mean under DDP was off) and reshuffles with the global seed;
a loader whose sampler is already a DistributedSampler is left as it is. `prepare_data` is called by
Lightning on one process per node.
"""

from __future__ import annotations

from typing import Iterator, Optional

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from gen_lightning.errors import UserError


class TrainingSampler(DistributedSampler):
    """A training order that counts its own epochs and saves (epoch, position) with the loader's state.

    It is a DistributedSampler (its arithmetic: the same order on every rank, padded to a multiple of the
    world size, rank r takes every W-th index), so Lightning leaves it in place. Why its own epochs: the
    epoch decides the order, and Lightning's is unreliable across a resume -- a loader fast-forwarded at load
    time, before Lightning's set_epoch, re-read epoch 0's order (every mid-epoch resume in an epoch > 0 was
    off: 4.6e-3 on the VAE), and a run resumed from an epoch's end with max_steps got set_epoch(e + 1) for
    its epoch e (the GPT read the next epoch's windows). So:
      - `set_epoch` (Lightning's) sets the epoch of the first iteration only, as in a run from scratch;
      - every further iteration is the next epoch;
      - the loader's checkpoint holds (epoch, samples yielded) -- torchdata's StatefulDataLoader saves the
        sampler's state_dict -- and the first iteration after a restore continues that epoch where it
        stopped, or starts the next one if it had ended.
    The body of `__iter__` runs at the first batch, so whatever order Lightning calls set_epoch, iter and
    load_state_dict in, the restored state wins. Subclasses give the order of one epoch (`epoch_order`).
    """

    def __init__(
        self, data_source: Dataset, seed: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True
    ) -> None:
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.yielded = 0
        self._iterated = False
        self._restored: Optional[tuple[int, int]] = None

    def set_epoch(self, epoch: int) -> None:
        if not self._iterated and self._restored is None:
            self.epoch = epoch

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's indices for `epoch`: DistributedSampler's, for the epoch given."""
        self.epoch = epoch
        return list(super().__iter__())

    def __iter__(self) -> Iterator[int]:
        if self._restored is not None:
            epoch, start = self._restored
            self._restored = None
            if start >= self.num_samples:  # saved at the end of its epoch
                epoch, start = epoch + 1, 0
        else:
            epoch, start = (self.epoch + 1 if self._iterated else self.epoch), 0
        self._iterated = True
        order = self.epoch_order(epoch)
        self.yielded = start
        for index in order[start:]:
            self.yielded += 1
            yield index

    def end_epoch(self) -> None:
        """The training loop ended this epoch: a checkpoint taken now must resume at the next epoch's start.
        Needed because the loop may stop before the order runs out (`limit_train_batches`, a batch sampler's
        drop_last): measured before, a resume from such an epoch-end checkpoint went on reading the ended
        epoch's order (VAE, 3-batch epochs: 3.3e-3 off an uninterrupted run)."""
        self.yielded = self.num_samples

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self._restored = (int(state["epoch"]), int(state["yielded"]))


def end_training_epochs(loaders) -> None:
    """`TrainingSampler.end_epoch` for every training sampler among `loaders` (the train loop's DataLoaders)."""
    for loader in loaders:
        batch_sampler = getattr(loader, "batch_sampler", None)
        for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
            if isinstance(sampler, TrainingSampler):
                sampler.end_epoch()
                break


class EpochShuffleSampler(TrainingSampler):
    """A shuffle that is a function of (seed, epoch) alone: on one process the plain permutation of
    (seed + epoch). A chained generator made epoch k's order depend on every draw before it (a run resumed
    in epoch 0 then saw another epoch-1 order). The seed is the DataModule's, on every world size."""


class EpochIndexSampler(TrainingSampler):
    """For datasets drawn afresh each epoch (random text windows): the indices `epoch * len + i`, i over this
    rank's shard of range(len) in order. The dataset decodes (epoch, i) from the index itself
    (`divmod(index, len)`), so the epoch reaches it through the sampler, in persistent workers too."""

    def __init__(self, data_source: Dataset, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(data_source, seed, num_replicas=num_replicas, rank=rank, shuffle=False)

    def epoch_order(self, epoch: int) -> list[int]:
        return [epoch * len(self.dataset) + i for i in super().epoch_order(epoch)]


class ShardSampler(UnrepeatedDistributedSampler):
    """Validation order: rank r reads items r, r + W, r + 2W, ... -- every item exactly once over all ranks.

    torch's DistributedSampler pads the set to a multiple of the world size by repeating items, so every
    validation mean under DDP counted some samples twice (measured 4.7e-4 relative on perplexity). Lightning's
    UnrepeatedDistributedSampler does not pad; being a DistributedSampler, Lightning keeps it in place."""

    def __init__(self, data_source: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=False)


def even_batches_size(n: int, world_size: int, batch_size: int) -> int:
    """The largest batch size <= `batch_size` that gives every rank the same number of validation batches.

    Unpadded shards hold q or q + 1 items (q = n // W); their batch counts differ exactly when q is a multiple
    of the batch size. Strategies that shard parameters (ZeRO-3, FSDP) make every forward a collective, so a
    rank with one batch more would wait forever for the others; the metrics are weighted by batch size, so a
    slightly smaller batch changes nothing else. Unsolvable only for batch sizes of 1-2 (then unchanged)."""
    q = n // world_size
    if world_size == 1 or n % world_size == 0 or q == 0:
        return batch_size
    for size in range(batch_size, 0, -1):
        if q % size:
            return size
    return batch_size


class WithIndex(Dataset):
    """`dataset[i] + (i,)`: items that know their index, for what must not depend on rank or batch (e.g. the
    fixed noise of a validation sample, gen_lightning.models.image_family.per_sample_noise)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return (*self.dataset[i], i)


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

    def _shards(self) -> tuple[int, int]:
        """(world size, rank) of the data-parallel group: the Trainer's, or one process without one."""
        kwargs = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        return (kwargs["num_replicas"], kwargs["rank"]) if kwargs else (1, 0)

    def _loader(self, dataset: Optional[Dataset], sampler_for, batch_size: int, drop_last: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        # Stateful: Lightning saves the loader's position in every checkpoint, so a
        # run resumed mid-epoch sees the very batches it would have seen, not the epoch's start again.
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler_for(dataset),
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # Its own generator for the workers' base seed: drawn from the global one, each new epoch
            # would shift the model's noise (GAN z, VAE eps, dropout) and a resumed run would diverge.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_sampler(self, dataset: Dataset) -> Sampler:
        """This rank's training order; datasets drawn afresh each epoch override it (EpochIndexSampler)."""
        world, rank = self._shards()
        return EpochShuffleSampler(dataset, self.seed, num_replicas=world, rank=rank)

    def train_dataloader(self) -> DataLoader:
        world, _ = self._shards()
        # drop_last keeps every step's batch the same size (BatchNorm and GAN losses prefer it) when each
        # rank's shard holds at least one full batch.
        drop_last = self.train_set is not None and len(self.train_set) >= self.batch_size * world
        return self._loader(self.train_set, self.train_sampler, self.batch_size, drop_last)

    def val_dataloader(self) -> DataLoader:
        world, rank = self._shards()
        size = len(self.val_set) if self.val_set is not None else 0
        return self._loader(
            self.val_set,
            lambda dataset: ShardSampler(dataset, num_replicas=world, rank=rank),
            even_batches_size(size, world, self.batch_size),
            drop_last=False,
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
