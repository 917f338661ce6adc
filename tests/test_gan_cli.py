"""The GAN configs end to end through the real CLI: sample quality, conditioning, 2-process DDP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import CONFIGS, REPO, cli_env


class RankParameters(Callback):
    """Loaded by the DDP run below and the GAN's DeepSpeed runs (`--trainer.callbacks+=tests.test_gan_cli.RankParameters`): each rank saves
    its parameters, so the test can compare the ranks."""

    def on_train_end(self, trainer, pl_module) -> None:
        from gen_lightning.strategies.sharding import full_parameters

        with full_parameters(pl_module):  # whole weights also under ZeRO-3 (tests/test_deepspeed.py)
            params = {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()}
        torch.save(params, f"rank{trainer.global_rank}_params.pt")


def the_run(cwd: Path) -> Path:
    (run,) = (cwd / "runs" / "gen-lightning").iterdir()
    return run


def digits_classifier(image_size: int):
    """Logistic regression on all 1797 bundled digits at the model's image size (99% train accuracy)."""
    from sklearn.linear_model import LogisticRegression

    from gen_lightning.data.images import load_digits_tensor

    images, labels = load_digits_tensor(image_size)
    return LogisticRegression(max_iter=200, C=0.1).fit(images.flatten(1).numpy(), labels.numpy())


def class_probabilities(classifier, model, n: int = 500, labels=None) -> np.ndarray:
    model.eval()
    images = model.sample(n, generator=torch.Generator().manual_seed(1), labels=labels)
    return classifier.predict_proba(images.flatten(1).numpy())


@pytest.mark.slow
def test_dcgan_digits_samples_look_like_digits(cli):
    from gen_lightning.models import GANModule

    # 200 batches of 16 (2 epochs); the documented run is 5 epochs.
    out = cli("fit", "--config", CONFIGS / "gan/dcgan_digits.yaml", "--trainer.max_steps", "400")
    assert out.returncode == 0, out.stderr[-3000:]
    run = the_run(cli.cwd)
    grids = sorted(p.name for p in (run / "samples").glob("samples_step*.png"))
    assert grids == ["samples_step0000100.png", "samples_step0000200.png"]  # every 100 batches (2 steps each)
    # FID is on by default and picks the GAN's best checkpoint.
    (best,) = (run / "checkpoints").glob("best-step=*.ckpt")
    ((key, state),) = [
        (k, v) for k, v in torch.load(best, weights_only=True)["callbacks"].items() if "Checkpoint{" in k
    ]
    assert "'monitor': 'val/fid'" in key and 0 < float(state["best_model_score"]) < 1e4

    trained = GANModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    torch.manual_seed(0)
    untrained = GANModule(**trained.hparams)
    classifier = digits_classifier(28)
    trained_p, untrained_p = class_probabilities(classifier, trained), class_probabilities(classifier, untrained)
    # Measured: untrained ~0.2, uniform noise images ~0.3, 5-epoch run ~0.7, real digits 0.95.
    assert trained_p.max(1).mean() > untrained_p.max(1).mean() + 0.25
    assert trained_p.max(1).mean() > 0.5
    # Not one collapsed mode: most classes are drawn.
    assert len(set(trained_p.argmax(1))) >= 7


@pytest.mark.slow
def test_conditional_dcgan_draws_the_asked_class(cli):
    from gen_lightning.models import GANModule

    out = cli("fit", "--config", CONFIGS / "gan/cdcgan_digits.yaml", "--trainer.max_steps", "400")
    assert out.returncode == 0, out.stderr[-3000:]
    model = GANModule.load_from_checkpoint(the_run(cli.cwd) / "checkpoints" / "last.ckpt")
    asked = torch.arange(500) % 10
    predicted = class_probabilities(digits_classifier(28), model, labels=asked).argmax(1)
    # Chance is 0.1.
    assert (predicted == asked.numpy()).mean() > 0.5


def test_dcgan_digits_under_plain_ddp_keeps_both_ranks_identical(cli):
    env = cli_env(PYTHONPATH=str(REPO))  # to import this module in the run
    out = cli(
        "fit",
        "--config",
        CONFIGS / "trainer/ddp.yaml",
        "--config",
        CONFIGS / "gan/dcgan_digits.yaml",
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_steps",
        "20",
        "--model.width",
        "16",
        "--trainer.callbacks+=tests.test_gan_cli.RankParameters",
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SubmoduleDDPStrategy" not in out.stderr  # no traceback naming the strategy
    rank0 = torch.load(cli.cwd / "rank0_params.pt")
    rank1 = torch.load(cli.cwd / "rank1_params.pt")
    assert {k.split(".")[0] for k in rank0} == {"generator", "discriminator"}
    assert rank0.keys() == rank1.keys()
    differing = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert differing == []
    # They trained (rank 0 saw other images than rank 1: identical weights come from the all-reduce).
    torch.manual_seed(0)
    from gen_lightning.models import GANModule

    fresh = dict(GANModule(width=16).named_parameters())
    assert any(not torch.allclose(rank0[k], fresh[k]) for k in rank0)


@pytest.mark.parametrize(
    "config, overrides",
    [
        ("gan/mlp_digits.yaml", []),
        # No CIFAR files in CI: the same config on synthetic 32x32 RGB images.
        ("gan/dcgan_cifar10.yaml", ["--data.dataset", "synthetic", "--data.channels", "3", "--data.num_workers", "0"]),
    ],
)
def test_other_gan_configs_train(cli, config, overrides):
    out = cli(
        "fit", "--config", CONFIGS / config, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "1", *overrides
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = the_run(cli.cwd)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "samples" / "samples_step0000002.png").is_file()  # 4 optimizer steps = 2 batches
