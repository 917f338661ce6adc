"""VAE family: shapes, the objective, KL warm-up, and learning end to end through the CLI."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from gen_lightning.models import VAEModule
from tests.conftest import CONFIGS


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_sample_and_reconstruct_shapes_and_range(net):
    vae = VAEModule(net=net, image_size=28, channels=1)
    samples = vae.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 28, 28)
    assert samples.min() >= -1 and samples.max() <= 1
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert vae.reconstruct(x).shape == (3, 1, 28, 28)


def test_mlp_is_the_classic_784_400_20():
    vae = VAEModule(net="mlp")
    linear_shapes = [tuple(m.weight.shape) for m in vae.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_shapes == [(400, 784), (20, 400), (20, 400), (400, 20), (784, 400)]


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    vae = VAEModule(net="mlp")
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        for layer in (vae.encoder.mu, vae.encoder.logvar):
            layer.weight.zero_()
            layer.bias.zero_()
        _, kl = vae.losses(x)
        assert kl.item() == pytest.approx(0.0, abs=1e-6)
        vae.encoder.mu.bias.fill_(1.0)  # mean 1 in every one of the 20 dims: KL = 20 * 0.5
        _, kl = vae.losses(x)
    assert kl.item() == pytest.approx(10.0, rel=1e-5)


def test_kl_warmup_is_linear_in_global_step(monkeypatch):
    vae = VAEModule(beta=2.0, kl_warmup_steps=100)
    for step, expected in [(0, 0.0), (50, 1.0), (100, 2.0), (400, 2.0)]:
        monkeypatch.setattr(VAEModule, "global_step", property(lambda self, s=step: s))
        assert vae.kl_weight() == pytest.approx(expected)


def _val_elbo_by_epoch(metrics_csv) -> list[float]:
    rows = list(csv.DictReader(open(metrics_csv)))
    return [float(r["val/elbo"]) for r in rows if r.get("val/elbo")]


def test_vae_learns_on_digits(cli):
    """The acceptance run, shortened: val/elbo after 3 epochs beats the first validation."""
    result = cli(
        "fit",
        "--config",
        CONFIGS / "vae" / "mlp_digits.yaml",
        "--trainer.max_epochs",
        "3",
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        "logs",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = list((cli.cwd / "logs").rglob("metrics.csv"))
    assert len(metrics) == 1
    elbo = _val_elbo_by_epoch(metrics[0])
    assert len(elbo) == 3
    assert all(math.isfinite(v) for v in elbo)
    # ELBO is in nats per image (784 Bernoulli pixels): a real improvement, not noise.
    assert elbo[-1] > elbo[0] + 20, elbo
    run = metrics[0].parent
    assert (run / "config.yaml").is_file(), "the merged config is saved with the run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt")), "best checkpoint by val/elbo"


def test_best_checkpoint_is_written_when_max_steps_ends_on_a_validation(cli):
    result = cli(
        "fit",
        "--config",
        CONFIGS / "vae" / "mlp_digits.yaml",
        "--trainer.logger",
        "false",
        "--trainer.max_steps",
        "10",
        "--trainer.val_check_interval",
        "10",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = cli.cwd / "runs" / "checkpoints"
    assert (checkpoints / "best-step=10.ckpt").is_file(), sorted(p.name for p in checkpoints.iterdir())
    assert (checkpoints / "last.ckpt").is_file()
