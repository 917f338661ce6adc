"""FID / KID / IS: the formula, reference statistics, the digits classifier evaluator, and the callback end to end."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

from gen_lightning.errors import UserError
from gen_lightning.metrics import GenerativeScores, ReferenceStats, to_uint8
from tests.conftest import CONFIGS, cli_env, run_cli
from tests.metrics_helpers import LinearFeatures


def classic_fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID as Heusel et al. define it, computed independently with numpy/scipy."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def random_features(seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(600, 16)) @ rng.normal(size=(16, 16))
    fake = rng.normal(loc=0.3, size=(500, 16)) @ rng.normal(size=(16, 16)) * 0.8
    return real, fake


def scores_on(real: np.ndarray, fake: np.ndarray, metrics=("fid",), **kw) -> GenerativeScores:
    scores = GenerativeScores(LinearFeatures(4, num_features=real.shape[1]), metrics, **kw)
    for chunk in np.array_split(real, 7):  # several updates: the running sums must add up
        scores.update_features(torch.tensor(chunk, dtype=torch.float32), None, real=True)
    for chunk in np.array_split(fake, 3):
        scores.update_features(torch.tensor(chunk, dtype=torch.float32), torch.zeros(len(chunk), 5), real=False)
    return scores


# -- the statistics ---------------------------------------------------------------------------------
def test_fid_equals_classic_formula_on_fixed_random_features():
    real, fake = random_features()
    ours = scores_on(real, fake).compute()["fid"]
    expected = classic_fid(real.astype(np.float32).astype(np.float64), fake.astype(np.float32).astype(np.float64))
    assert expected > 1.0
    assert ours == pytest.approx(expected, rel=1e-3)


def test_reference_stats_in_pytorch_fid_layout_give_the_same_fid(tmp_path):
    real, fake = random_features(1)
    direct = scores_on(real, fake).compute()["fid"]
    # A file exactly as pytorch-fid writes it: only mu and sigma.
    path = tmp_path / "published.npz"
    np.savez(path, mu=real.astype(np.float32).mean(0), sigma=np.cov(real.astype(np.float32), rowvar=False))
    stats = ReferenceStats.load(path)
    scores = GenerativeScores(LinearFeatures(4, num_features=16), ("fid", "kid"))
    scores.load_reference(stats)
    scores.update_features(torch.tensor(fake, dtype=torch.float32), None, real=False)
    out = scores.compute()
    assert out["fid"] == pytest.approx(direct, rel=1e-4)
    assert "kid" not in out  # mu/sigma cannot give KID: it is left out, not invented


def test_real_statistics_roundtrip_through_the_cache_file(tmp_path):
    real, fake = random_features(2)
    source = scores_on(real, fake, metrics=("fid", "kid"), kid_subset_size=200)
    expected = source.compute()
    saved = source.real_statistics().save(tmp_path / "stats.npz")
    loaded = ReferenceStats.load(saved)
    assert loaded.num_samples == 600 and loaded.kid_features.shape == (600, 16)
    assert loaded.extractor == "linear"
    again = GenerativeScores(LinearFeatures(4, num_features=16), ("fid", "kid"), kid_subset_size=200)
    again.load_reference(loaded)
    again.update_features(torch.tensor(fake, dtype=torch.float32), None, real=False)
    out = again.compute()
    assert out["fid"] == pytest.approx(expected["fid"], rel=1e-6)
    assert out["kid"] == pytest.approx(expected["kid"], rel=1e-3, abs=1e-6)


def test_reference_stats_of_another_extractor_are_refused(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048))
    scores = GenerativeScores(LinearFeatures(4, num_features=16))
    with pytest.raises(UserError, match="2048 features but the linear extractor gives 16"):
        scores.load_reference(ReferenceStats.load(path))
    with pytest.raises(UserError, match="do not exist"):
        ReferenceStats.load(tmp_path / "missing.npz")


def test_fid_state_is_running_sums_whatever_the_number_of_images():
    """FID keeps sums ([D] and [D, D] per side), not features: its memory does not grow with images."""
    scores = GenerativeScores(LinearFeatures(4, num_features=16), ("fid",))

    def state_bytes():
        return sum(
            t.numel() * t.element_size()
            for t in (
                scores.fid.real_features_sum,
                scores.fid.real_features_cov_sum,
                scores.fid.fake_features_sum,
                scores.fid.fake_features_cov_sum,
            )
        )

    before = state_bytes()
    for _ in range(20):
        scores.update_features(torch.randn(500, 16), None, real=False)
    assert state_bytes() == before == 2 * (16 + 16 * 16) * 8
    assert int(scores.fid.fake_features_num_samples) == 10_000


def test_to_uint8_rounds_the_data_range():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 64, 128, 255, 255]


# -- the digits classifier evaluator ----------------------------------------------------------------
@pytest.fixture(scope="session")
def digits_evaluator(tmp_path_factory):
    """Trained once per session, through the real CLI and the shipped config."""
    folder = tmp_path_factory.mktemp("evaluator")
    result = run_cli(
        [
            "fit",
            "--config",
            CONFIGS / "evaluator" / "digits_classifier.yaml",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ],
        folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = folder / "data" / "evaluators" / "digits-28.pt"
    assert path.is_file(), result.stderr[-3000:]
    return path


def test_digits_classifier_reaches_97_percent(digits_evaluator):
    blob = torch.load(digits_evaluator, weights_only=True)
    assert blob["val_acc"] >= 0.97


@pytest.fixture(scope="session")
def digits_scores(digits_evaluator):
    from gen_lightning.data.images import load_digits_tensor
    from gen_lightning.metrics.classifier_features import load_classifier_features

    extractor = load_classifier_features(digits_evaluator, (1, 28, 28))
    images, _ = load_digits_tensor(28)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, val = images[perm[:1400]], images[perm[1400:]]

    def fid_against_train(fake: torch.Tensor) -> dict:
        scores = GenerativeScores(extractor, ("fid", "kid"), kid_subset_size=300)
        scores.update(train, real=True)
        scores.update(fake, real=False)
        return scores.compute()

    return extractor, images, val, fid_against_train


def test_fid_separates_real_from_noise_and_untrained_generator(digits_scores):
    from gen_lightning.models import VAEModule

    _, _, val, fid_against_train = digits_scores
    n = len(val)
    real = fid_against_train(val)
    noise = fid_against_train(torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    torch.manual_seed(0)
    untrained = fid_against_train(VAEModule().sample(n, generator=torch.Generator().manual_seed(2)))
    assert real["fid"] * 20 < noise["fid"], (real, noise)
    assert real["fid"] * 20 < untrained["fid"], (real, untrained)
    assert abs(real["kid"]) * 20 < min(noise["kid"], untrained["kid"])


def test_inception_score_of_real_digits_is_close_to_the_number_of_classes(digits_scores):
    extractor, images, _, _ = digits_scores
    scores = GenerativeScores(extractor, ("is",), is_splits=1)
    scores.update(images, real=False)
    value = scores.compute()["is"]
    assert 8.5 < value <= 10.0


def test_classifier_extractor_plugs_into_torchmetrics_directly(digits_scores):
    """The extractor obeys torchmetrics' `feature=` contract (uint8 in, num_features), with the same result."""
    from torchmetrics.image import FrechetInceptionDistance

    extractor, images, val, fid_against_train = digits_scores
    plain = FrechetInceptionDistance(feature=extractor)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    plain.update(to_uint8(images[perm[:1400]]), real=True)
    plain.update(to_uint8(val), real=False)
    assert float(plain.compute()) == pytest.approx(fid_against_train(val)["fid"], rel=1e-4)


# -- the callback, end to end -----------------------------------------------------------------------
def test_callback_logs_fid_in_a_short_vae_fit(digits_evaluator, tmp_path):
    (tmp_path / "data" / "evaluators").mkdir(parents=True)
    shutil.copy(digits_evaluator, tmp_path / "data" / "evaluators" / "digits-28.pt")
    # The config's own GenerativeMetrics (FID is on by default for the VAE and GAN), with this evaluator.
    result = run_cli(
        [
            "fit",
            "--config",
            CONFIGS / "vae" / "mlp_digits.yaml",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=5",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir=logs",
        ],
        tmp_path,
        env=cli_env(GEN_LIGHTNING_EVALUATOR_CACHE=str(tmp_path / "data" / "evaluators")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GenerativeMetrics: extractor classifier" in result.stderr
    rows = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    fids = [float(r["val/fid"]) for r in rows if r.get("val/fid")]
    assert len(fids) == 2 and all(0 < f < 1e4 for f in fids)
    assert all(float(r["val/is"]) >= 1.0 for r in rows if r.get("val/is"))
    assert list((tmp_path / "data" / "evaluators" / "stats").glob("digits-28-classifier-*.npz"))
    assert "training one now" not in result.stderr, "the cached evaluator was used"


def test_choosing_inception_without_weights_fails_in_one_line_before_training(tmp_path):
    env = cli_env(TORCH_HOME=str(tmp_path / "torch_home"))
    result = run_cli(
        [
            "fit",
            "--config",
            CONFIGS / "vae" / "mlp_digits.yaml",
            "--trainer.max_epochs=1",
            "--trainer.callbacks+=gen_lightning.callbacks.GenerativeMetrics",
            "--trainer.callbacks.extractor=inception",
        ],
        tmp_path,
        env=env,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("gen-lightning: error:")]
    assert len(errors) == 1
    expected_dir = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert "weights-inception-2015-12-05-6726825d.pth" in errors[0] and str(expected_dir) in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.ckpt"))


def test_is_std_is_the_population_std_of_the_split_scores():
    """torch-fidelity and the original IS code report np.std (population) of the per-split scores; torchmetrics'
    std is the sample std (n - 1). Recomputed here by hand: same seeded shuffle, same splits."""
    import numpy as np
    from types import SimpleNamespace

    logits = torch.randn(400, 10, generator=torch.Generator().manual_seed(0)) * 3
    extractor = SimpleNamespace(num_features=4, num_logits=10, fingerprint="fake", name="fake")
    scores = GenerativeScores(extractor, ("is",), is_splits=5, seed=7)
    scores.update_features(torch.zeros(400, 4), logits, real=False)
    out = scores.compute()
    torch.manual_seed(7)
    shuffled = logits[torch.randperm(400)]
    per_split = []
    for chunk in shuffled.chunk(5):
        p = chunk.softmax(1)
        per_split.append(float((p * (chunk.log_softmax(1) - p.mean(0, keepdim=True).log())).sum(1).mean().exp()))
    assert out["is"] == pytest.approx(np.mean(per_split), rel=1e-5)
    assert out["is_std"] == pytest.approx(np.std(per_split), rel=1e-4)  # ddof=0
    assert out["is_std"] < np.std(per_split, ddof=1)
