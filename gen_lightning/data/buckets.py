"""Length-bucketed batches of (source, target) pairs, each rank its own share, and their padding.

Why a sampler of our own: pairs differ in length by 10x or more, and a batch costs what its longest pair
costs; batching pairs of similar length wastes little on padding. fairseq and HF's group_by_length do
the same; neither is usable here (fairseq is a whole trainer; HF's sampler belongs to its Trainer and
pads validation under DDP).

How it meets Lightning and DDP: Lightning replaces a DataLoader's sampler by its DistributedSampler
under DDP/DeepSpeed, and fails on a custom batch sampler (it cannot inject a sampler into one; see
lightning.pytorch.utilities.data._dataloader_init_kwargs_resolve_sampler), unless the loader's sampler
already *is* a DistributedSampler: then Lightning keeps it (documented for `use_distributed_sampler`).
So `BucketBatchSampler` is a DistributedSampler whose items are whole batches (lists of indices), given
to a DataLoader with `batch_size=None` (PyTorch's "batches from the sampler" mode: the dataset is indexed
with the list). It is rank-aware itself, Lightning calls its `set_epoch`, and its order is a pure function
of (seed, epoch): torchdata's StatefulDataLoader resumes mid-epoch by skipping the batches already seen.

Training: each epoch, a (seed + epoch) permutation is cut into buckets of `bucket_batches` batches;
inside a bucket pairs are sorted by length and cut into full batches; the batches are shuffled; every
rank gets the same number of them (what does not fill a batch, and the batches short of a full round of
ranks, wait for another epoch's shuffle: ranks that trained different numbers of steps would hang in
DDP's all-reduce).
Validation: every pair exactly once, no duplicates (a padded DistributedSampler would bias the means);
the pairs sorted by length are cut into (ranks x k) batches of near-equal size (at most `batch_size`),
so every rank runs the same number of batches, which ZeRO-3 needs (each forward is a collective).
Their order is shuffled once with the seed, so a capped number of batches (BLEU on the first few) is a
fair sample of all lengths, the same one at every validation.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from gen_lightning.errors import UserError

IGNORE_INDEX = -100  # label of padded target positions: F.cross_entropy's default ignore_index


class BucketBatchSampler(DistributedSampler):
    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        num_replicas: int,
        rank: int,
        train: bool,
        seed: int = 0,
        bucket_batches: int = 50,
        split: str = "train",
    ) -> None:
        """lengths: [N, 2] source and target lengths of the pairs; train: shuffle per epoch and keep full
        batches only (else: validation order, every pair once); split: its name, for error messages."""
        super().__init__(
            range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=train, seed=seed, drop_last=train
        )
        self.lengths, self.batch_size, self.bucket_batches, self.train = lengths, batch_size, bucket_batches, train
        n, ranks = len(lengths), num_replicas
        if train:
            self.per_rank = (n // batch_size) // ranks
            if self.per_rank == 0:
                raise UserError(
                    f"the {split} split has {n} pairs, fewer than data.batch_size x ranks = "
                    f"{batch_size} x {ranks}; lower data.batch_size or give more pairs"
                )
        else:
            self.per_rank = math.ceil(math.ceil(n / batch_size) / ranks)
            if n < self.per_rank * ranks:
                raise UserError(
                    f"the {split} split has {n} pairs, fewer than the {ranks} ranks need (one batch "
                    f"each); give more validation pairs or run on fewer devices"
                )
        # DistributedSampler's own counters, in batches: what len() and Lightning read.
        self.num_samples, self.total_size = self.per_rank, self.per_rank * ranks

    def _by_length(self, indices: np.ndarray) -> np.ndarray:
        return indices[np.lexsort((self.lengths[indices, 1], self.lengths[indices, 0]))]  # source, then target

    def batches(self) -> list[list[int]]:
        """All ranks' batches of this epoch, in order; this rank's are every num_replicas-th."""
        n, size = len(self.lengths), self.batch_size
        if self.train:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator).numpy()
            span = size * self.bucket_batches
            batches = []
            for start in range(0, n, span):
                bucket = self._by_length(order[start : start + span])
                batches += [bucket[i : i + size] for i in range(0, len(bucket) - size + 1, size)]
            shuffled = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in shuffled][: self.total_size]
        else:
            batches = np.array_split(self._by_length(np.arange(n)), self.total_size)
            shuffled = torch.randperm(len(batches), generator=torch.Generator().manual_seed(self.seed)).tolist()
            batches = [batches[i] for i in shuffled]
        return [b.tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return self.per_rank


class PairBatch(NamedTuple):
    source: torch.Tensor  # [B, S] source ids, padded
    source_mask: torch.Tensor  # [B, S] True at real source tokens
    target_in: torch.Tensor  # [B, T] decoder input: the start token, then the target
    target_out: torch.Tensor  # [B, T] labels: the target, then the stop token; IGNORE_INDEX at padding


class PadPairs:
    """list of (source ids, target ids) -> PairBatch. The end-of-text id is the decoder's start token,
    its stop token and the padding id (padding is masked or ignored, so any id would do)."""

    def __init__(self, eot_id: int) -> None:
        self.eot_id = eot_id

    def __call__(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> PairBatch:
        B = len(pairs)
        S = max(len(s) for s, _ in pairs)
        T = max(len(t) for _, t in pairs) + 1
        source = torch.full((B, S), self.eot_id, dtype=torch.long)
        source_mask = torch.zeros((B, S), dtype=torch.bool)
        target_in = torch.full((B, T), self.eot_id, dtype=torch.long)
        target_out = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        for i, (s, t) in enumerate(pairs):
            source[i, : len(s)] = s
            source_mask[i, : len(s)] = True
            target_in[i, 1 : len(t) + 1] = t
            target_out[i, : len(t)] = t
            target_out[i, len(t)] = self.eot_id
        return PairBatch(source, source_mask, target_in, target_out)
