"""The dataset-classifier evaluator: found in the cache, or trained once (logged) and cached.

Cache: `<cache_dir>/<dataset key>.pt`, e.g. `data/evaluators/digits-28.pt`, the file that
`gen-lightning fit --config configs/evaluator/digits_classifier.yaml` writes. When it is missing the
same recipe (ClassifierModule defaults, DEFAULT_EPOCHS) is trained by `gen-lightning fit` in a
child process on one device: ~15-25 s for digits on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from gen_lightning.capabilities import YieldsImages
from gen_lightning.errors import UserError
from gen_lightning.file_lock import file_lock
from gen_lightning.metrics.features import ClassifierFeatures

log = logging.getLogger(__name__)

# Below this validation accuracy the classifier is a poor judge: say so whenever it is loaded.
MIN_TRUSTED_ACCURACY = 0.9


def dataset_key(datamodule) -> str:
    """`<dataset>-<image_size>` (+ channels when not the source's default, + a hash of a folder's path)."""
    from gen_lightning.data.images import _DEFAULTS

    name = getattr(datamodule, "dataset", None)
    if not isinstance(name, str) or not isinstance(datamodule, YieldsImages):
        raise UserError(
            f"the classifier evaluator needs an ImageDataModule-like datamodule (dataset name and image_shape), "
            f"got {type(datamodule).__name__}; pass classifier_path, or use extractor=inception"
        )
    channels, size, _ = datamodule.image_shape
    key = f"{name}-{size}"
    if channels != _DEFAULTS.get(name, (channels, size))[0]:
        key += f"-c{channels}"
    if name in ("folder", "synthetic"):  # not one fixed dataset: tie the key to what defines it
        spec = (
            str(Path(datamodule.root).resolve())
            if name == "folder"
            else repr((datamodule.synthetic_size, datamodule.num_classes, datamodule.seed))
        )
        key += "-" + hashlib.sha1(spec.encode()).hexdigest()[:8]
    return key


# The launcher's variables that would make the child process join (or wait for) the parent's job.
# CUDA_VISIBLE_DEVICES stays: under Slurm it names the GPUs this job was given.
_JOB_ENV_PREFIXES = ("SLURM_", "TORCHELASTIC_", "PL_")
_JOB_ENV = {
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
}


def classifier_fit_args(datamodule, path: Path, root_dir: Path, max_epochs: Optional[int] = None) -> list[str]:
    """`gen-lightning fit` arguments of the reference recipe (configs/evaluator/digits_classifier.yaml),
    for the datamodule's dataset: ClassifierModule defaults, one device, no logger."""
    from gen_lightning.models.classifier import DEFAULT_EPOCHS

    channels, size, _ = datamodule.image_shape
    return [
        "fit",
        "--seed_everything=0",
        "--model=gen_lightning.models.classifier.ClassifierModule",
        f"--model.num_classes={datamodule.num_classes}",  # image_size/channels: linked from the data's
        f"--model.export_path={path}",
        "--data=gen_lightning.data.ImageDataModule",
        f"--data.dataset={datamodule.dataset}",
        f"--data.root={datamodule.root}",
        f"--data.image_size={size}",
        f"--data.channels={channels}",
        "--data.download=false",
        f"--data.synthetic_size={datamodule.synthetic_size}",
        f"--data.num_classes={datamodule.num_classes}",
        f"--data.val_fraction={datamodule.val_fraction}",
        f"--data.seed={datamodule.seed}",
        "--data.batch_size=64",
        f"--trainer.max_epochs={max_epochs or DEFAULT_EPOCHS}",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root_dir}",
    ]


def train_classifier(datamodule, path: Path, max_epochs: Optional[int] = None) -> float:
    """Train ClassifierModule on `datamodule`'s dataset with `gen-lightning fit`; it exports to `path`.

    A separate process, not a Trainer nested in this one: inside a DDP job a nested Trainer joins the
    job's collectives (measured: its prepare_data barrier waits for the other ranks forever), and its
    RNG use would shift this run's random state. The child gets the environment minus the job's
    launcher variables, so it is a plain single-process run.
    """
    env = {k: v for k, v in os.environ.items() if k not in _JOB_ENV and not k.startswith(_JOB_ENV_PREFIXES)}
    with tempfile.TemporaryDirectory(prefix="gen-lightning-evaluator-") as root:
        args = classifier_fit_args(datamodule, Path(path).resolve(), Path(root), max_epochs)
        cmd = [sys.executable, "-m", "gen_lightning", *args]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not path.is_file():
        raise RuntimeError(
            f"training the classifier evaluator failed (exit {result.returncode}):\n{result.stderr[-3000:]}\n"
            f"command: {' '.join(cmd)}"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return float(blob["val_acc"])


def ensure_classifier(datamodule, cache_dir: Path, train_if_missing: bool = True) -> Path:
    """The cached evaluator for this dataset; trains it when missing (call on one rank only). Processes that
    miss it at the same time train it once: the others wait on the lock and then find the file."""
    path = Path(cache_dir) / f"{dataset_key(datamodule)}.pt"
    if path.is_file():
        return path
    with file_lock(path):
        return _ensure_classifier_locked(datamodule, path, train_if_missing)


def _ensure_classifier_locked(datamodule, path: Path, train_if_missing: bool) -> Path:
    if path.is_file():  # built by another process while this one waited
        return path
    if not train_if_missing:
        raise UserError(
            f"no classifier evaluator at {path}; train it with "
            f"`gen-lightning fit --config configs/evaluator/digits_classifier.yaml --model.export_path {path}` "
            f"(adapted to your data) or set train_classifier=true"
        )
    log.warning("GenerativeMetrics: no classifier evaluator at %s; training one now (once, then cached)", path)
    start = time.perf_counter()
    acc = train_classifier(datamodule, path)
    log.warning(
        "GenerativeMetrics: trained the classifier evaluator in %.1f s, val/acc %.4f -> %s",
        time.perf_counter() - start,
        acc,
        path,
    )
    return path


def load_classifier_features(
    path: str | Path, image_shape: Optional[tuple[int, int, int]] = None
) -> ClassifierFeatures:
    from gen_lightning.models.classifier import load_evaluator_net

    path = Path(path)
    if not path.is_file():
        raise UserError(f"classifier evaluator '{path}' does not exist; train it (configs/evaluator/) or fix the path")
    net, meta = load_evaluator_net(path)
    shape = (meta["net"]["channels"], meta["image_size"], meta["image_size"])
    if image_shape is not None and tuple(image_shape) != shape:
        raise UserError(
            f"classifier evaluator '{path}' was trained on images of shape {shape}, the data has {tuple(image_shape)}; "
            f"train one for this data (delete the file to retrain it automatically)"
        )
    acc = meta.get("val_acc")
    if acc is not None and acc < MIN_TRUSTED_ACCURACY:
        log.warning(
            "classifier evaluator %s has only %.1f%% validation accuracy: FID/IS from it are weak", path, 100 * acc
        )
    fingerprint = hashlib.sha1(path.read_bytes()).hexdigest()[:8]  # the weights, wherever the file moves
    return ClassifierFeatures(net, shape, fingerprint)
