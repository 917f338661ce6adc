"""GenerativeMetrics: FID / IS / KID of the model's own samples, on a schedule, logged as val/fid, val/is, val/kid.

Add it to any image model that has `sample(n, generator) -> images in [-1, 1]` (VAE; GANs provide
their EMA generator through the same method):

    trainer:
      callbacks:
        - class_path: gen_lightning.callbacks.GenerativeMetrics
          init_args: {extractor: classifier, num_samples: 1000, every_n_epochs: 1}

Before training (setup), once:
- the extractor is built and logged. `classifier`: the dataset's evaluator from `<data.root>/evaluators/`,
  trained there by rank 0 when missing (logged, ~15 s for digits). `inception`: torch-fidelity's
  InceptionV3 from local weights only; missing weights fail in __init__, i.e. before the Trainer
  exists, with one line that names the file and the folder. Never a fallback from one to the other.
- the real statistics: `reference` (an .npz, pytorch-fid layout) if given, else the cache
  `<evaluators>/stats/<dataset>-<image_size>-<extractor>-n<N>.npz`, computed by rank 0 on the first
  `max_real_samples` images of the whole dataset when missing.
Then every `every_n_epochs` validation epochs (or every `every_n_steps` optimizer steps): the `num_samples`
images are drawn in chunks of `batch_size`, each chunk from its own fixed seed and the chunks dealt out
to the ranks, so the images (and val/fid) are the same on any number of ranks and at every evaluation;
torchmetrics reduces across ranks, every rank logs the same global value. KID subsets and IS splits are
random draws over the gathered features, whose order follows the ranks: equal in distribution across
world sizes, not to the last digit.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset

from gen_lightning.capabilities import HasFullDataset, SamplesImages, YieldsImages
from gen_lightning.errors import UserError
from gen_lightning.file_lock import file_lock
from gen_lightning.metrics.classifier_features import dataset_key, ensure_classifier, load_classifier_features
from gen_lightning.metrics.features import FeatureExtractor
from gen_lightning.metrics.inception import InceptionFeatures, require_inception_weights
from gen_lightning.metrics.reference import ReferenceStats
from gen_lightning.metrics.scores import METRICS, GenerativeScores
from gen_lightning.strategies.sharding import parameters_are_sharded

log = logging.getLogger(__name__)


def _on_rank_zero(trainer: L.Trainer, fn: Callable[[], Any]) -> Any:
    """Run fn on global rank 0 and hand its result (or its failure) to every rank.

    A plain barrier would leave the other ranks waiting forever when rank 0 fails; broadcasting the
    outcome lets every rank stop with the same message."""
    outcome = None
    if trainer.is_global_zero:
        try:
            outcome = ("ok", fn())
        except UserError as err:
            outcome = ("user_error", str(err))
        except Exception as err:  # noqa: BLE001 - re-raised below on rank 0 with its traceback
            outcome = ("error", f"{type(err).__name__}: {err}")
            if trainer.world_size == 1:
                raise
            trainer.strategy.broadcast(outcome)
            raise
    outcome = trainer.strategy.broadcast(outcome)
    if outcome[0] == "user_error":
        raise UserError(outcome[1])
    if outcome[0] == "error":
        raise RuntimeError(f"GenerativeMetrics: rank 0 failed: {outcome[1]}")
    return outcome[1]


CACHE_ENV = "GEN_LIGHTNING_EVALUATOR_CACHE"


def evaluator_cache(cache_dir: Optional[str], datamodule) -> Path:
    """Where evaluators and reference statistics live: `cache_dir`, else $GEN_LIGHTNING_EVALUATOR_CACHE (one folder
    for every run of a machine or test session, so the evaluator is trained once), else `<data.root>/evaluators`."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(getattr(datamodule, "root", "data")) / "evaluators"


class GenerativeMetrics(Callback):
    def __init__(
        self,
        extractor: Literal["classifier", "inception"] = "classifier",
        num_samples: int = 1000,
        every_n_epochs: Optional[int] = 1,
        every_n_steps: Optional[int] = None,
        metrics: list[str] = list(METRICS),  # noqa: B006 - a fresh list per import; never mutated
        batch_size: int = 250,
        reference: Optional[str] = None,
        max_real_samples: int = 10_000,
        cache_dir: Optional[str] = None,
        classifier_path: Optional[str] = None,
        train_classifier: bool = True,
        inception_weights: Optional[str] = None,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        is_splits: int = 10,
        seed: int = 0,
    ) -> None:
        """
        Args:
            extractor: `classifier` (trained on the dataset; works offline) or `inception` (InceptionV3,
                comparable with published numbers; needs its weights on disk).
            num_samples: generated images per evaluation, split across ranks.
            every_n_epochs: evaluate at the end of every N-th validation epoch (None: never by epoch).
            every_n_steps: evaluate every N optimizer steps instead (None: never by step).
            metrics: any of fid, kid, is.
            batch_size: images generated (and passed through the extractor) per chunk; each chunk has its own seed.
            reference: real statistics .npz (mu, sigma: pytorch-fid layout) to compare against; None =
                computed from the data and cached.
            max_real_samples: real images used for the cached statistics.
            cache_dir: evaluators and statistics; None = $GEN_LIGHTNING_EVALUATOR_CACHE or `<data.root>/evaluators`.
            classifier_path: an exported classifier evaluator to use instead of the cached one.
            train_classifier: train the classifier evaluator when it is missing (else fail with the command).
            inception_weights: the InceptionV3 weights file; None = torch hub's checkpoints dir.
            kid_subset_size: KID subset size (capped by the images available).
            kid_subsets: KID subsets; its compute costs ~4 s per 100 subsets of 1,000 on one CPU core.
            is_splits: Inception Score splits (the mean and spread over them are logged).
            seed: base seed of the generated chunks (the same images at every evaluation, on any number of ranks).
        """
        super().__init__()
        if num_samples < 2:
            raise UserError(f"GenerativeMetrics.num_samples must be >= 2, got {num_samples}")
        if not every_n_epochs and not every_n_steps:
            raise UserError("GenerativeMetrics needs every_n_epochs or every_n_steps; set one of them")
        if extractor not in ("classifier", "inception"):
            raise UserError(f"GenerativeMetrics.extractor must be classifier or inception, got '{extractor}'")
        unknown = set(metrics) - set(METRICS)
        if unknown or not metrics:
            raise UserError(f"GenerativeMetrics.metrics must be a non-empty subset of {list(METRICS)}, got {metrics}")
        if extractor == "inception":
            require_inception_weights(inception_weights)  # fail now, before the Trainer is even built
        self.extractor_kind = extractor
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.metric_names = list(metrics)
        self.batch_size = batch_size
        self.reference = reference
        self.max_real_samples = max_real_samples
        self.cache_dir = cache_dir
        self.classifier_path = classifier_path
        self.train_classifier = train_classifier
        self.inception_weights = inception_weights
        self.kid_subset_size = kid_subset_size
        self.kid_subsets = kid_subsets
        self.is_splits = is_splits
        self.seed = seed
        self.scores: Optional[GenerativeScores] = None
        self._last_step_bucket = 0
        # What a GAN's best checkpoint is chosen by (GenCheckpoint; a module's own metric comes first).
        self.checkpoint_metric = ("val/fid", "min") if "fid" in self.metric_names else None

    # -- setup: extractor and reference statistics, once ------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.scores is not None or stage not in ("fit", "validate"):
            return
        if not isinstance(pl_module, SamplesImages):
            raise UserError(
                f"GenerativeMetrics needs a model with sample(n, generator); {type(pl_module).__name__} has none"
            )
        datamodule = trainer.datamodule
        cache = evaluator_cache(self.cache_dir, datamodule)
        extractor = self._build_extractor(trainer, datamodule, cache)
        self.scores = GenerativeScores(
            extractor,
            self.metric_names,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            is_splits=self.is_splits,
            seed=self.seed,
        )
        stats = self._reference_stats(trainer, datamodule, cache, extractor)
        self.scores.load_reference(stats, trainer.global_rank, trainer.world_size)
        if "kid" in self.metric_names and not self.scores.kid_available:
            rank_zero_info("GenerativeMetrics: the reference file has no kid_features: KID is not computed")

    def _build_extractor(self, trainer: L.Trainer, datamodule, cache: Path) -> FeatureExtractor:
        if self.extractor_kind == "inception":
            extractor = InceptionFeatures(self.inception_weights)
            rank_zero_info(
                f"GenerativeMetrics: extractor inception (torch-fidelity InceptionV3, {extractor.fingerprint})"
            )
            return extractor
        if self.classifier_path:
            path = Path(self.classifier_path)
        else:
            path = Path(
                _on_rank_zero(trainer, lambda: str(ensure_classifier(datamodule, cache, self.train_classifier)))
            )
        if not path.is_file():
            raise UserError(
                f"classifier evaluator {path} is not visible on rank {trainer.global_rank}; "
                f"put cache_dir on a filesystem shared by all nodes"
            )
        extractor = load_classifier_features(
            path, datamodule.image_shape if isinstance(datamodule, YieldsImages) else None
        )
        rank_zero_info(f"GenerativeMetrics: extractor classifier ({path}, {extractor.fingerprint})")
        return extractor

    def _reference_stats(self, trainer: L.Trainer, datamodule, cache: Path, extractor) -> ReferenceStats:
        if self.reference:
            rank_zero_info(f"GenerativeMetrics: reference statistics from {self.reference}")
            return ReferenceStats.load(self.reference)
        name = f"{dataset_key(datamodule)}-{extractor.fingerprint}-n{self.max_real_samples}.npz"
        path = cache / "stats" / name

        def compute_and_save() -> str:
            with file_lock(path):  # another run may be computing the same file
                if not path.is_file():
                    self._compute_and_save(datamodule, extractor, trainer, path)
            return str(path)

        stats_path = _on_rank_zero(trainer, compute_and_save)
        rank_zero_info(f"GenerativeMetrics: reference statistics {stats_path}")
        return ReferenceStats.load(stats_path)

    def _compute_and_save(self, datamodule, extractor, trainer: L.Trainer, path: Path) -> None:
        start = time.perf_counter()
        stats = self._real_statistics(datamodule, extractor, trainer.strategy.root_device)
        stats.save(path)
        rank_zero_info(
            f"GenerativeMetrics: real statistics of {stats.num_samples} images in {time.perf_counter() - start:.1f} s -> {path}"
        )

    def _real_statistics(self, datamodule, extractor, device: torch.device) -> ReferenceStats:
        """Stream the real images through a rank-local GenerativeScores: only sums and KID features kept."""
        if isinstance(datamodule, HasFullDataset):
            dataset = datamodule.full_dataset()
        else:
            datamodule.setup("fit")
            dataset = datamodule.train_dataloader().dataset
        n = min(self.max_real_samples, len(dataset))
        # A seeded random subset when the dataset is larger than the cap: no class is left out.
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))[:n]
        local = GenerativeScores(extractor, ("fid", "kid"), seed=self.seed).to(device)
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the global RNG, and the run
        # that computes the statistics (the first) would train on other noise than a run that finds them cached.
        loader = DataLoader(Subset(dataset, order.tolist()), batch_size=self.batch_size, generator=torch.Generator())
        for images, *_ in loader:
            local.update(images, real=True)
        return local.real_statistics()

    # -- the schedule -----------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps:  # resumed runs continue the step schedule where it was
            self._last_step_bucket = trainer.global_step // self.every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self.every_n_steps:
            return
        # `>` and not `==`: a GAN's manual optimization advances global_step by 2 per batch.
        bucket = trainer.global_step // self.every_n_steps
        if bucket > self._last_step_bucket:
            self._last_step_bucket = bucket
            self._evaluate(trainer, pl_module, on_step=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        validating_only = trainer.state.fn == "validate"
        if validating_only or (self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0):
            self._evaluate(trainer, pl_module, on_step=False)

    # -- one evaluation ---------------------------------------------------------------------------
    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, on_step: bool) -> dict[str, float]:
        world, rank = trainer.world_size, trainer.global_rank
        scores = self.scores.to(pl_module.device)
        # The samples are chunks of `batch_size` numbered over all ranks, chunk k from its own seed, rank r drawing
        # chunks r, r + W, ...: the same images whatever the number of ranks (so val/fid is too), and the same
        # latents at every evaluation (the curve shows the model changing, not the noise).
        chunks = [
            (start, min(self.batch_size, self.num_samples - start))
            for start in range(0, self.num_samples, self.batch_size)
        ]
        mine = chunks[rank::world]
        # Sharded weights (ZeRO-3, FSDP) make every forward a collective: every rank samples as often.
        calls = -(-len(chunks) // world) if parameters_are_sharded(trainer) else len(mine)
        was_training = pl_module.training
        pl_module.eval()
        try:
            for i in range(calls):
                start, n = mine[i] if i < len(mine) else (0, 1)
                images = pl_module.sample(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + start))
                if i < len(mine):
                    scores.update(images.float(), real=False)
        finally:
            pl_module.train(was_training)
        values = scores.compute()
        scores.reset_fake()
        for name, value in values.items():
            # The values are already global (torchmetrics gathered the states) and identical on every
            # rank; sync_dist averages identical numbers: no change, and every rank logs the same.
            pl_module.log(
                f"val/{name}", value, sync_dist=True, on_step=on_step, on_epoch=not on_step, prog_bar=name == "fid"
            )
        return values
