"""The data layer's samplers: fresh random text windows every epoch, validation shards without repeats.

Rank-aware behaviour is checked with the samplers' own (world size, rank) arguments, which is what the
DataModule hands them from the Trainer; the end-to-end check on 2 processes is the conformance matrix
(tests/matrix), which compares every family's validation metric on 2 processes with 1.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gen_lightning.data import ImageDataModule, TextDataModule
from gen_lightning.data.base import ShardSampler, even_batches_size
from gen_lightning.data.text import RandomWindows, _TokenFile

BLOCK = 32


@pytest.fixture(scope="module")
def text_dm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    # ~40k bytes of text, so one epoch of tokens // block windows covers ~63% of it.
    words = ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 9))) for _ in range(7000)]
    (folder / "corpus.txt").write_text(" ".join(words))
    dm = TextDataModule(
        corpus=str(folder / "corpus.txt"),
        tokenizer="byte",
        block_size=BLOCK,
        batch_size=16,
        cache_dir=str(folder / "cache"),
        val_fraction=0.1,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def covered_fraction(dm: TextDataModule, epochs: int, folder) -> float:
    """Fraction of token positions that appear in some training input after `epochs` epochs of the real loader.
    The token file is replaced by one whose token at position p is p, so a window shows where it was read."""
    length = 60_000
    path = folder / "positions.bin"
    np.arange(length, dtype=np.uint16).tofile(path)
    dm.train_set = RandomWindows(_TokenFile(path, "uint16", length), BLOCK, length // BLOCK, seed=0)
    loader = dm.train_dataloader()
    seen = np.zeros(length, dtype=bool)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
        for x, _ in loader:
            seen[x.flatten().numpy()] = True
    return seen.mean()


@pytest.mark.parametrize("epochs", [1, 2, 4])
def test_random_windows_are_drawn_afresh_every_epoch(tmp_path, epochs):
    dm = TextDataModule(corpus=__file__, tokenizer="byte", block_size=BLOCK, batch_size=64, cache_dir=str(tmp_path))
    # Independent uniform windows: a token is missed by one window with p = 1 - block / tokens, so after E epochs
    # of tokens // block windows, 1 - exp(-E) is covered (windows drawn once: 63% whatever E).
    expected = 1 - math.exp(-epochs)
    assert covered_fraction(dm, epochs, tmp_path) == pytest.approx(expected, abs=0.03)


def test_windows_are_a_function_of_seed_epoch_and_index(text_dm):
    item = text_dm.train_set
    n = len(item)
    first, again = item[3][0], item[3][0]
    assert torch.equal(first, again)
    assert not torch.equal(item[3][0], item[n + 3][0]), "epoch 1 draws other windows than epoch 0"
    x, y = item[2 * n + 5]
    assert torch.equal(x[1:], y[:-1])


def resumed_batches(make_loader, epoch: int, consumed: int) -> tuple[list, list]:
    """The rest of `epoch` after `consumed` batches, uninterrupted and through a saved and restored loader state.
    Restored in Lightning's order: the state is loaded and the iterator made before the epoch is set."""
    loader = make_loader()
    loader.sampler.set_epoch(epoch)
    batches = iter(loader)
    for _ in range(consumed):
        next(batches)
    state = loader.state_dict()
    rest = [b[0] for b in batches]
    resumed = make_loader()
    resumed.load_state_dict(state)
    again = iter(resumed)
    resumed.sampler.set_epoch(epoch)
    return rest, [b[0] for b in again]


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_text_loader_resumes_mid_epoch_on_the_same_windows(text_dm, epoch):
    rest, again = resumed_batches(text_dm.train_dataloader, epoch, consumed=3)
    assert len(again) == len(rest) > 0
    assert all(torch.equal(a, b) for a, b in zip(again, rest))


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_image_loader_resumes_mid_epoch_in_any_epoch(epoch):
    # Measured before the samplers were stateful: resumed in epoch 1, the loader fast-forwarded epoch 0's order.
    dm = ImageDataModule("digits", image_size=8, batch_size=64)
    dm.setup("fit")
    rest, again = resumed_batches(dm.train_dataloader, epoch, consumed=5)
    assert len(again) == len(rest) == 20
    assert all(torch.equal(a, b) for a, b in zip(again, rest))


@pytest.mark.parametrize("n", [511, 179, 180, 7])
def test_validation_shards_hold_every_item_exactly_once(n):
    dataset = list(range(n))
    shards = [list(ShardSampler(dataset, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == dataset, "no item repeated, none left out"


@pytest.mark.parametrize(
    ("n", "world", "batch"),
    [(129, 2, 64), (257, 2, 64), (511, 2, 64), (65, 2, 32), (1001, 4, 50), (179, 2, 64), (10, 3, 4)],
)
def test_validation_batches_are_as_many_on_every_rank(n, world, batch):
    # Sharded parameters (ZeRO-3, FSDP) make each forward a collective: one batch more on one rank would hang.
    size = even_batches_size(n, world, batch)
    assert 1 <= size <= batch
    counts = {math.ceil(len(range(r, n, world)) / size) for r in range(world)}
    assert len(counts) == 1, (size, counts)
    if n % world == 0:
        assert size == batch


def test_image_validation_loader_under_two_ranks_has_no_duplicates():
    shards = []
    for rank in (0, 1):
        dm = ImageDataModule("digits", image_size=8, batch_size=64, val_fraction=0.0995)  # 179 images
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        dm.setup("fit")
        shards.append(torch.cat([index for _, _, index in dm.val_dataloader()]).tolist())
    assert len(shards[0]) == 90 and len(shards[1]) == 89
    assert sorted(shards[0] + shards[1]) == list(range(179))


def test_training_order_is_the_seeded_shuffle_sharded_across_ranks():
    orders = []
    for rank in (0, 1):
        dm = ImageDataModule("digits", image_size=8, batch_size=8, seed=3)
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        dm.setup("fit")
        sampler = dm.train_dataloader().sampler
        sampler.set_epoch(2)
        orders.append(list(sampler))
    permutation = torch.randperm(1617, generator=torch.Generator().manual_seed(3 + 2)).tolist()
    padded = permutation + permutation[: 1618 - 1617]
    assert orders[0] == padded[0::2] and orders[1] == padded[1::2]
