"""Conditional VAE and class-conditional sampling: the nets read the label, num_classes=0 is the old VAE
parameter for parameter, the sample grid has one row per class, and `gen-lightning sample --labels` for
conditional GAN and VAE (bad labels: one line, exit 2, nothing written)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from gen_lightning.callbacks import ImageSamples
from gen_lightning.capabilities import Reconstructs, SamplesImagesByClass
from gen_lightning.commands import sample
from gen_lightning.data import ImageDataModule
from gen_lightning.data.images import load_digits_tensor
from gen_lightning.errors import UserError
from gen_lightning.models import GANModule, GPTModule, VAEModule
from tests.conftest import CONFIGS
from tests.helpers import tiny_trainer

# The parameters (and buffers) of the unconditional VAE before conditioning existed: a checkpoint written
# then holds exactly these, so with num_classes=0 it must still load.
OLD_MLP = {
    "encoder.body.1.weight": (400, 784),
    "encoder.body.1.bias": (400,),
    "encoder.mu.weight": (20, 400),
    "encoder.mu.bias": (20,),
    "encoder.logvar.weight": (20, 400),
    "encoder.logvar.bias": (20,),
    "decoder.body.0.weight": (400, 20),
    "decoder.body.0.bias": (400,),
    "decoder.body.2.weight": (784, 400),
    "decoder.body.2.bias": (784,),
}
OLD_CONV = {
    "encoder.body.0.weight": (32, 1, 4, 4),
    "encoder.body.0.bias": (32,),
    "encoder.body.2.weight": (64, 32, 4, 4),
    "encoder.body.2.bias": (64,),
    "encoder.body.3.weight": (64,),
    "encoder.body.3.bias": (64,),
    "encoder.body.3.running_mean": (64,),
    "encoder.body.3.running_var": (64,),
    "encoder.body.3.num_batches_tracked": (),
    "encoder.body.6.weight": (400, 3136),
    "encoder.body.6.bias": (400,),
    "encoder.mu.weight": (20, 400),
    "encoder.mu.bias": (20,),
    "encoder.logvar.weight": (20, 400),
    "encoder.logvar.bias": (20,),
    "decoder.fc.0.weight": (400, 20),
    "decoder.fc.0.bias": (400,),
    "decoder.fc.2.weight": (3136, 400),
    "decoder.fc.2.bias": (3136,),
    "decoder.body.0.weight": (64, 32, 4, 4),
    "decoder.body.0.bias": (32,),
    "decoder.body.1.weight": (32,),
    "decoder.body.1.bias": (32,),
    "decoder.body.1.running_mean": (32,),
    "decoder.body.1.running_var": (32,),
    "decoder.body.1.num_batches_tracked": (),
    "decoder.body.3.weight": (32, 1, 4, 4),
    "decoder.body.3.bias": (1,),
}
# Conditioning on 10 classes widens only the first layer of each net by the one-hot.
WIDER = {
    "mlp": {"encoder.body.1.weight": (400, 794), "decoder.body.0.weight": (400, 30)},
    "conv": {"encoder.body.0.weight": (32, 11, 4, 4), "decoder.fc.0.weight": (400, 30)},
}


@pytest.mark.parametrize("net, old", [("mlp", OLD_MLP), ("conv", OLD_CONV)])
def test_unconditional_is_the_old_vae_and_conditional_only_widens_the_first_layers(net, old):
    plain = VAEModule(net=net, hidden_dim=400)
    assert {k: tuple(v.shape) for k, v in plain.state_dict().items()} == old
    conditional = VAEModule(net=net, hidden_dim=400, num_classes=10)
    assert {k: tuple(v.shape) for k, v in conditional.state_dict().items()} == {**old, **WIDER[net]}
    plain.load_state_dict({k: torch.zeros(s) for k, s in old.items()})  # an old checkpoint, strictly


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_the_label_decides_what_is_decoded(net):
    torch.manual_seed(0)
    vae = VAEModule(net=net, num_classes=10, hidden_dim=64, latent_dim=8).eval()
    assert isinstance(vae, SamplesImagesByClass) and isinstance(vae, Reconstructs) and vae.num_classes == 10
    z = torch.randn(2, 8)
    threes, sevens = vae.decode(z, torch.tensor([3, 3])), vae.decode(z, torch.tensor([7, 7]))
    assert threes.shape == (2, 1, 28, 28) and (threes - sevens).abs().max() > 1e-3
    # The same seed and labels give the same images; unasked, the classes come 0, 1, ..., 9, 0, ...
    draw = vae.sample(12, generator=torch.Generator().manual_seed(1))
    in_turn = torch.arange(12) % 10
    assert torch.equal(draw, vae.sample(12, generator=torch.Generator().manual_seed(1), labels=in_turn))
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert vae.reconstruct(x, torch.tensor([0, 1, 2])).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="labels"):
        vae.reconstruct(x)
    recon, kl = vae.losses(x, torch.tensor([0, 1, 2]))
    assert recon > 0 and kl >= 0


def test_conditional_vae_checks_the_number_of_classes_of_the_data():
    model = VAEModule(net="mlp", image_size=16, num_classes=5)
    model._trainer = SimpleNamespace(datamodule=ImageDataModule("digits", image_size=16))
    with pytest.raises(UserError, match="--model.num_classes 10"):
        model.setup("fit")


def test_image_samples_has_one_row_per_class_and_reconstructs_with_the_labels(tmp_path):
    model = VAEModule(net="mlp", image_size=16, hidden_dim=32, latent_dim=4, num_classes=3)
    seen = []
    original = model.reconstruct
    model.reconstruct = lambda x, labels=None: seen.append(labels) or original(x, labels)
    callback = ImageSamples(every_n_steps=0, num_samples=8, nrow=4)
    data = ImageDataModule("synthetic", image_size=16, batch_size=16, synthetic_size=128, num_classes=3)
    tiny_trainer(tmp_path, max_steps=3, callbacks=[callback]).fit(model, data)
    grid = Image.open(tmp_path / "samples" / "samples_step0000003.png")
    assert grid.size == (4 * 18 + 2, 3 * 18 + 2)  # 3 classes = 3 rows of nrow = 4 images of 16 px
    # Row k decodes class k: the grid equals the one drawn with those labels explicitly.
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    model.eval()
    expected = callback.grid(model.sample(12, generator=torch.Generator().manual_seed(0), labels=labels))
    pixels = torch.tensor(list(grid.getdata()), dtype=torch.float32).view(grid.size[1], grid.size[0], 3)
    assert (pixels.permute(2, 0, 1) - expected.mul(255).add(0.5).clamp(0, 255).floor()).abs().max() <= 1
    assert torch.equal(seen[-1], callback._held_out_labels[:8])  # the held-out images' own labels


def _digit_means() -> torch.Tensor:
    images, labels = load_digits_tensor(28)
    return torch.stack([images[labels == k].mean(0) for k in range(10)])


@pytest.mark.slow  # ~40 s: the config's 20 epochs on the digits and two sampling runs
def test_cvae_learns_digits_and_samples_the_asked_classes(cli):
    fit = cli(
        "fit",
        "--config",
        CONFIGS / "vae" / "cvae_digits.yaml",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    )
    assert fit.returncode == 0, (fit.stdout + fit.stderr)[-3000:]
    grid = sorted((cli.cwd / "runs" / "samples").glob("samples_step*.png"))[-1]
    assert Image.open(grid).size == (10 * 30 + 2, 10 * 30 + 2)  # the config's grid: a row of 10 per digit
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    # The label is obeyed: decoding the prior's mode z = 0 as digit k gives the image nearest to the mean
    # of the data's k's (after 5 epochs instead of 20 it was 3 of 10; 10 epochs, 7 of 10).
    model = sample.load_module(last)
    decoded = model.decode(torch.zeros(10, model.hparams.latent_dim), torch.arange(10))
    nearest = torch.cdist(decoded.flatten(1), _digit_means().flatten(1)).argmin(dim=1)
    assert (nearest == torch.arange(10)).sum() >= 9, nearest.tolist()
    result = cli("sample", "--ckpt", last, "--labels", "all", "--nrow", 6, "--out", "all.png", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 60 samples to all.png (one row per class 0..9)" in result.stdout
    assert Image.open(cli.cwd / "all.png").size == (6 * 30 + 2, 10 * 30 + 2)  # 10 rows of 6
    # The real CLI for one bad label: one line on stderr, exit 2, no file. The other messages: in-process.
    result = cli("sample", "--ckpt", last, "--labels", "12", "--out", "bad.png", "--device", "cpu")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == "gen-lightning: error: --labels 12: this VAEModule knows classes 0..9"
    assert not (cli.cwd / "bad.png").exists()
    with pytest.raises(UserError, match="--labels must be class indices separated by commas"):
        sample.main(["--ckpt", str(last), "--labels", "3,x", "--out", str(cli.cwd / "bad.png"), "--device", "cpu"])
    assert (
        sample.main(["--ckpt", str(last), "--labels", "3,3,7", "--out", str(cli.cwd / "three.png"), "--device", "cpu"])
        == 0
    )
    assert Image.open(cli.cwd / "three.png").size == (2 * 30 + 2, 2 * 30 + 2)  # 3 images: 2 per row (sqrt)
    assert not (cli.cwd / "bad.png").exists()


def _sample_with(monkeypatch, model, *args):
    monkeypatch.setattr(sample, "load_module", lambda path, device="cpu": model.eval())
    return sample.main(["--ckpt", "unused.ckpt", "--device", "cpu", *map(str, args)])


def test_conditional_gan_samples_the_asked_labels(tmp_path, monkeypatch, capsys):
    gan = GANModule(net="mlp", image_size=16, width=4, latent_dim=8, num_classes=10)
    asked = []
    original = gan.sample
    gan.sample = lambda n, generator=None, labels=None: asked.append(labels) or original(n, generator, labels)
    assert _sample_with(monkeypatch, gan, "--labels", "all", "--nrow", 3, "--out", tmp_path / "all.png") == 0
    assert asked[-1].tolist() == [k for k in range(10) for _ in range(3)]
    assert Image.open(tmp_path / "all.png").size == (3 * 18 + 2, 10 * 18 + 2)  # 10 rows, one per class
    assert _sample_with(monkeypatch, gan, "--labels", "3,3,7", "--out", tmp_path / "three.png") == 0
    assert asked[-1].tolist() == [3, 3, 7] and "wrote 3 samples" in capsys.readouterr().out


def test_labels_that_cannot_be_drawn_are_user_errors_and_write_nothing(tmp_path, monkeypatch):
    out = tmp_path / "grid.png"
    cases = [
        (GANModule(net="mlp", image_size=16, width=4, num_classes=10), ["--labels", "10"], "knows classes 0..9"),
        (GANModule(net="mlp", image_size=16, width=4, num_classes=10), ["--labels=-1,2"], "--labels -1"),
        (GANModule(net="mlp", image_size=16, width=4), ["--labels", "3"], "this GANModule is unconditional"),
        (VAEModule(net="mlp"), ["--labels", "all"], "this VAEModule is unconditional"),
        (VAEModule(net="mlp", num_classes=10), ["--labels", "1,2", "--n", "2"], "drop --n"),
        (GPTModule(n_layer=1, n_head=2, n_embd=16), ["--labels", "3"], "GPTModule generates text"),
    ]
    for model, args, message in cases:
        with pytest.raises(UserError, match=message):
            _sample_with(monkeypatch, model, *args, "--out", out)
        assert not out.exists()
