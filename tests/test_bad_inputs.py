"""Bad inputs around runs and checkpoints: one line, exit 2, nothing written or overwritten.

(An unknown parameter in a sweep file: tests/test_sweep.py::test_unknown_parameter_is_one_line_and_nonzero_exit.)
"""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from gen_lightning.checkpoint_io import atomic_torch_save
from gen_lightning.cli import main
from tests.conftest import CONFIGS
from tests.helpers import QUIET_NO_CALLBACKS, TINY_VAE, assert_one_line_error, snapshot


def _tiny_gpt(corpus, tokenizer="byte") -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / "gpt/nano_stdlib.yaml"),
        "--data.corpus",
        str(corpus),
        "--data.tokenizer",
        tokenizer,
        "--data.vocab_size",
        "257",
        "--data.block_size",
        "16",
        "--data.batch_size",
        "4",
        *QUIET_NO_CALLBACKS,
    ]


@pytest.fixture
def vae_ckpt(tmp_path, monkeypatch):
    """A real 2-step VAE run: runs/<project>/<id>/checkpoints/last.ckpt and its run folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr("sys.argv", ["gen-lightning"])
    main([*TINY_VAE, "--trainer.max_steps", "2"])
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    return last


def test_corrupt_image_in_folder_dataset(cli_inprocess):
    root = cli_inprocess.cwd / "images"
    (root / "a").mkdir(parents=True)
    for i in range(8):
        Image.new("L", (8, 8), color=random.randint(0, 255)).save(root / "a" / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    result = cli_inprocess(
        *TINY_VAE,
        "--data.dataset",
        "folder",
        "--data.root",
        str(root),
        "--data.image_size",
        "8",
        "--data.channels",
        "1",
        "--data.batch_size",
        "3",
        "--data.val_fraction",
        "0.3",
        "--trainer.max_steps",
        "20",
        "--trainer.logger",
        "false",
    )
    assert_one_line_error(result, "corrupt or unreadable image", "broken.png")
    assert not list(cli_inprocess.cwd.rglob("*.ckpt"))


def test_checkpoint_of_another_model_family(cli_inprocess, vae_ckpt):
    corpus = cli_inprocess.cwd / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 400)
    before = snapshot(cli_inprocess.cwd / "runs")
    result = cli_inprocess(*_tiny_gpt(corpus), "--trainer.max_steps", "2", "--ckpt_path", str(vae_ckpt))
    assert_one_line_error(result, str(vae_ckpt), "is a VAEModule", "this run builds a GPTModule")
    assert snapshot(cli_inprocess.cwd / "runs") == before


def test_checkpoint_that_does_not_fit_the_model(cli_inprocess, vae_ckpt):
    # Without its hyperparameters (Lightning's CLI would otherwise rebuild the checkpoint's own sizes).
    checkpoint = torch.load(vae_ckpt, weights_only=True)
    del checkpoint["hyper_parameters"]
    atomic_torch_save(checkpoint, vae_ckpt)
    result = cli_inprocess(
        *TINY_VAE, "--model.hidden_dim", "24", "--trainer.max_steps", "4", "--ckpt_path", str(vae_ckpt)
    )
    assert_one_line_error(result, "does not fit this model", "(16, 784)", "(24, 784)")


def test_tokenizer_mismatch_between_checkpoint_and_data(cli_inprocess):
    corpus = cli_inprocess.cwd / "corpus.txt"
    corpus.write_text("".join(f"value_{i} = compute({i}, 'text')\n" for i in range(600)))
    main_args = ["--trainer.max_steps", "2", "--trainer.logger", "false"]
    main([*_tiny_gpt(corpus), *main_args, "--trainer.default_root_dir", "byte"])
    (ckpt,) = (cli_inprocess.cwd / "byte").rglob("last.ckpt")
    # Same vocabulary size (257), another tokenizer: shapes fit, the token ids would not.
    result = cli_inprocess(
        *_tiny_gpt(corpus, tokenizer="bpe"), *main_args, "--trainer.default_root_dir", "bpe", "--ckpt_path", str(ckpt)
    )
    assert_one_line_error(result, "another tokenizer")
    assert not list((cli_inprocess.cwd / "bpe").rglob("*.ckpt"))


def test_truncated_checkpoint_via_ckpt_path(cli_inprocess, vae_ckpt):
    vae_ckpt.write_bytes(vae_ckpt.read_bytes()[:1000])
    before = snapshot(cli_inprocess.cwd / "runs")
    result = cli_inprocess(*TINY_VAE, "--trainer.max_steps", "4", "--ckpt_path", str(vae_ckpt))
    assert_one_line_error(result, str(vae_ckpt), "corrupt or truncated")
    assert snapshot(cli_inprocess.cwd / "runs") == before


def test_ckpt_path_last_without_a_checkpoint_is_an_error(cli_inprocess):
    result = cli_inprocess(*TINY_VAE, "--trainer.max_steps", "4", "--ckpt_path", "last")
    assert_one_line_error(result, "--ckpt_path last", "runs/gen-lightning", "last.ckpt")
    assert not list(cli_inprocess.cwd.rglob("*.ckpt"))


@pytest.mark.parametrize("option", ["--trainer.default_root_dir", "--trainer.logger.init_args.save_dir"])
def test_output_folder_not_writable(cli_inprocess, option):
    # A regular file where a folder must go: unwritable for every user, root included (CI runs as root).
    (cli_inprocess.cwd / "occupied").write_text("a file, not a folder")
    result = cli_inprocess(*TINY_VAE, "--trainer.max_steps", "2", option, "occupied/runs")
    assert_one_line_error(result, "occupied/runs", "not a writable folder", "Not a directory")
    assert not list(cli_inprocess.cwd.rglob("*.ckpt"))
