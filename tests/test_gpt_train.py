"""GPT end to end through the real CLI: pre-train on the stdlib, sample, export, fine-tune, DDP, errors.

One short pre-training run (module fixture) feeds the tests after it. Its corpus is the first 3M
characters of the default stdlib corpus, so the test sees the configuration a user runs, only shorter.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import CONFIGS, run_cli
from tests.helpers import QUIET_KEEP_SUMMARY

PRETRAIN = CONFIGS / "gpt" / "nano_stdlib.yaml"
FINETUNE = CONFIGS / "gpt" / "nano_finetune.yaml"
STEPS = 80


def val_loss_of(run) -> float:
    """The run's final val/loss, from the summary every `fit` writes into its run folder."""
    return json.loads((run / "runs" / "summary.json").read_text())["metrics"]["val/loss"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, cache):
    cwd = tmp_path_factory.mktemp("pretrain")
    result = run_cli(
        [
            "fit",
            "--config",
            PRETRAIN,
            "--trainer.max_steps",
            STEPS,
            "--trainer.val_check_interval",
            STEPS,
            "--data.max_chars",
            3_000_000,
            "--data.val_windows",
            128,
            "--data.cache_dir",
            cache,
            *QUIET_KEEP_SUMMARY,
        ],
        cwd,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return cwd


def test_pretraining_beats_the_uniform_and_unigram_baselines(pretrained, cache):
    last = pretrained / "runs" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == STEPS
    assert ckpt["tokenizer"] == '{"kind": "byte"}'  # sampling needs no data folder
    loss = val_loss_of(pretrained)
    # A model that only learned byte frequencies scores the unigram entropy of the validation text.
    (val_bin,) = cache.glob("text-*/val.bin")
    counts = np.bincount(np.fromfile(val_bin, dtype=np.uint16), minlength=257).astype(float)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())
    assert loss < math.log(257) - 2.0, loss  # uniform: 5.55 nats
    assert loss < unigram - 0.3, (loss, unigram)  # it uses context, not just frequencies
    # The text-sample callback wrote the final model's sample into the run folder.
    samples = (pretrained / "runs" / "samples" / "text.md").read_text()
    assert f"## step {STEPS}" in samples and "def " in samples


def test_sample_cli_prints_text_from_the_checkpoint_alone(pretrained):
    last = pretrained / "runs" / "checkpoints" / "last.ckpt"
    elsewhere = pretrained / "elsewhere"  # no data folder, no config: the checkpoint carries the tokenizer
    elsewhere.mkdir()
    result = run_cli(
        [
            "sample",
            "--ckpt",
            last,
            "--prompt",
            "def ",
            "--num-samples",
            "2",
            "--top-k",
            "20",
            "--max-new-tokens",
            "120",
            "--no-stop",
            "--seed",
            "3",
        ],
        elsewhere,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    samples = result.stdout.rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert len(samples) == 2 and samples[0] != samples[1]
    for text in samples:
        assert text.startswith("def ") and len(text.encode()) >= 120  # the prompt + 120 bytes
        assert sum(c.isascii() and (c.isprintable() or c == "\n") for c in text) / len(text) > 0.95


def test_export_loads_in_transformers_and_imports_back(pretrained):
    transformers = pytest.importorskip("transformers")
    from gen_lightning.commands.sample import load_module
    from gen_lightning.models import GPTModule

    last = pretrained / "runs" / "checkpoints" / "last.ckpt"
    out = pretrained / "hf-export"
    result = run_cli(["export", "--ckpt", last, "--out", out], pretrained)
    assert result.returncode == 0, result.stderr[-2000:]
    ours = load_module(str(last))
    tokens = torch.tensor([list(b"import os\nfor x in range(10):\n    print(x)\n")])
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(hf(tokens).logits, ours(tokens), atol=1e-4)
    # Importing the folder back with a shorter context: the same logits on the positions kept.
    short = GPTModule(block_size=32)
    short.load_pretrained(str(out))
    with torch.no_grad():
        assert torch.allclose(short(tokens[:, :32]), ours(tokens[:, :32]), atol=1e-5)


def test_finetune_starts_from_the_pretrained_weights(pretrained, cache):
    last = pretrained / "runs" / "checkpoints" / "last.ckpt"
    cwd = pretrained / "finetune"
    cwd.mkdir()
    # 5 steps at a warm-up learning rate barely move the weights: a low loss can only come from init_from.
    result = run_cli(
        [
            "fit",
            "--config",
            FINETUNE,
            "--model.init_from",
            last,
            "--trainer.max_steps",
            5,
            "--trainer.val_check_interval",
            5,
            "--data.block_size",
            32,
            "--data.val_windows",
            128,
            "--data.cache_dir",
            cache,
            *QUIET_KEEP_SUMMARY,
        ],
        cwd,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    tuned = cwd / "runs" / "checkpoints" / "last.ckpt"
    assert val_loss_of(cwd) < 3.0  # a fresh model after 5 such steps: ~5.5
    ckpt = torch.load(tuned, map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["net.transformer.wpe.weight"].shape == (32, 128)  # cropped from 64 positions


def test_vocab_on_the_model_is_a_user_error_naming_the_tokenizer(cli, tmp_path):
    # model.vocab_size is linked to the data's tokenizer: a too small one cannot be configured any more.
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("print('hello')\n" * 200)
    result = cli(
        "fit",
        "--config",
        PRETRAIN,
        "--model.vocab_size",
        200,
        "--data.corpus",
        corpus,
        "--data.cache_dir",
        tmp_path / "cache",
        *QUIET_KEEP_SUMMARY,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        "gen-lightning: error: model.vocab_size is linked to the data's tokenizer (data.tokenizer; "
        "data.vocab_size for bpe) now"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_gpt_trains_under_ddp_on_two_cpu_processes(cli, tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(3000)))
    result = cli(
        "fit",
        "--config",
        CONFIGS / "trainer" / "ddp.yaml",
        "--config",
        PRETRAIN,
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_steps",
        6,
        "--trainer.val_check_interval",
        6,
        "--data.corpus",
        corpus,
        "--data.cache_dir",
        tmp_path / "cache",
        "--data.batch_size",
        8,
        "--data.val_windows",
        16,
        "--model.n_layer",
        1,
        *QUIET_KEEP_SUMMARY,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6
    assert val_loss_of(cli.cwd) < math.log(257)


@pytest.mark.gpu
def test_gpt_trains_under_deepspeed_stage2_in_bf16(cli, tmp_path):
    pytest.importorskip("deepspeed")
    result = cli(
        "fit",
        "--config",
        CONFIGS / "trainer" / "deepspeed_stage2.yaml",
        "--config",
        PRETRAIN,
        "--trainer.devices",
        1,
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.max_steps",
        30,
        "--trainer.val_check_interval",
        30,
        "--data.max_chars",
        1_000_000,
        "--data.cache_dir",
        tmp_path / "cache",
        *QUIET_KEEP_SUMMARY,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    assert last.is_dir()  # DeepSpeed writes a folder of shards
    assert (cli.cwd / "runs" / "samples" / "text.md").is_file()
