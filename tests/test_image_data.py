"""ImageDataModule: every source, tested on real on-disk formats that the tests generate."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from gen_lightning.data import ImageDataModule
from gen_lightning.errors import UserError


def _setup(**kwargs) -> ImageDataModule:
    dm = ImageDataModule(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_digits_are_the_1797_sklearn_images_in_range():
    dm = _setup(dataset="digits", image_size=16, val_fraction=0.1, seed=0)
    assert len(dm.train_set) + len(dm.val_set) == 1797
    assert len(dm.val_set) == 180
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.5  # strokes reach the top of the range
    assert y.dtype == torch.long and 0 <= y.min() and y.max() <= 9
    assert dm.image_shape == (1, 16, 16) and dm.num_classes == 10


def test_split_depends_on_seed_only():
    a, b, c = (_setup(dataset="digits", seed=s) for s in (0, 0, 1))
    assert a.val_set.dataset.indices == b.val_set.dataset.indices
    assert a.val_set.dataset.indices != c.val_set.dataset.indices
    assert not set(a.val_set.dataset.indices) & set(a.train_set.indices)


def test_synthetic_has_class_structure():
    dm = _setup(dataset="synthetic", synthetic_size=200, image_size=16)
    x, y = dm.full_dataset().tensors
    assert x.shape == (200, 1, 16, 16)
    # Same class -> nearby blobs: within-class distance is well below between-class distance.
    flat = x.flatten(1)
    d = torch.cdist(flat, flat)
    same = y[:, None] == y[None, :]
    assert d[same].mean() < 0.5 * d[~same].mean()


def _write_idx(path, array: np.ndarray) -> None:
    # The MNIST idx format: magic (0x0801 labels / 0x0803 images), big-endian dims, raw uint8 data.
    magic = 0x0800 + array.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for dim in array.shape:
            f.write(struct.pack(">I", dim))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_reads_real_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    dm = _setup(dataset="mnist", root=str(tmp_path), download=False, batch_size=8)
    assert len(dm.train_set) + len(dm.val_set) == 40  # the official train split only
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.min() >= -1 and x.max() <= 1


def test_cifar10_reads_real_pickle_batches(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, 4))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    # torchvision checks the official md5 sums; point it at the sums of our generated files.
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    dm = _setup(dataset="cifar10", root=str(tmp_path), download=False, batch_size=4)
    assert len(dm.train_set) + len(dm.val_set) == 20
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32)


def test_missing_mnist_without_download_names_the_fix(tmp_path):
    dm = ImageDataModule(dataset="mnist", root=str(tmp_path), download=False)
    with pytest.raises(UserError, match="mnist not found"):
        dm.setup("fit")


def _folder_dataset(root, corrupt: bool = False) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def test_folder_dataset_resizes_and_labels_by_subfolder(tmp_path):
    _folder_dataset(tmp_path / "imgs")
    dm = _setup(dataset="folder", root=str(tmp_path / "imgs"), image_size=16, batch_size=4)
    assert dm.num_classes == 2
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16)
    assert set(y.tolist()) <= {0, 1}


def test_corrupt_image_is_named(tmp_path):
    _folder_dataset(tmp_path / "imgs", corrupt=True)
    dm = _setup(dataset="folder", root=str(tmp_path / "imgs"), image_size=16, val_fraction=0.5)
    with pytest.raises(UserError, match="broken.png"):
        for dataset in (dm.train_set, dm.val_set):
            for i in range(len(dataset)):
                dataset[i]


def test_missing_folder_fails_at_construction(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ImageDataModule(dataset="folder", root=str(tmp_path / "nothing"))
