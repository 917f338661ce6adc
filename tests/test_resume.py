"""Exact resume: N steps in one go == N/2 steps + resume from last.ckpt for N/2 more (to 1e-6 on CPU).

The halves are chosen so the resumed part crosses an epoch boundary with a validation in it: the
data-loader position, the epoch's shuffle, the optimizer state(s), the loop counters that drive
KL warm-up / LR schedules / n_critic, the EMA weights and the RNG state must all come back.
Single-process runs call the real CLI entry point in this process (same code as the console script,
no interpreter start-up per run). Every family under 2-process DDP and DeepSpeed: tests/test_conformance.py.
"""

from __future__ import annotations

import pytest
import torch

from gen_lightning.cli import main
from tests.conftest import CONFIGS

QUIET = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.logger",
    "false",
    "--trainer.limit_val_batches",
    "2",
]

# 1617 training digits: batch 64 -> 25 steps per epoch; 20 + 20 steps cross the epoch-1 boundary.
VAE = [
    "--config",
    CONFIGS / "vae/mlp_digits.yaml",
    "--model.hidden_dim",
    "32",
    "--model.latent_dim",
    "4",
    "--data.batch_size",
    "64",
    "--model.kl_warmup_steps",
    "30",
]
# n_critic 2 and EMA: both optimizers, the critic counter and the EMA copy must resume.
GAN = [
    "--config",
    CONFIGS / "gan/mlp_digits.yaml",
    "--model.width",
    "8",
    "--model.latent_dim",
    "8",
    "--data.batch_size",
    "64",
    "--model.n_critic",
    "2",
    "--model.ema_decay",
    "0.9",
]
# Dropout on (RNG state), LR warm-up + cosine (scheduler state), random windows (data position).
GPT = [
    "--config",
    CONFIGS / "gpt/nano_stdlib.yaml",
    "--model.dropout",
    "0.1",
    "--model.warmup_steps",
    "5",
    "--model.decay_steps",
    "24",  # else the cosine ends at max_steps, which the half run sets to 12
    "--data.batch_size",
    "8",
    "--data.block_size",
    "32",
    "--data.val_windows",
    "16",
    "--trainer.val_check_interval",
    "10",
    "--trainer.callbacks",
    "[]",
]
# The LSTM the same way: dropout (RNG state), warm-up + cosine, random windows; a projection (hidden != embedding).
LSTM = [
    "--config",
    CONFIGS / "lstm/stdlib.yaml",
    "--model.dropout",
    "0.1",
    "--model.warmup_steps",
    "5",
    "--model.decay_steps",
    "24",
    "--model.n_embd",
    "32",
    "--model.n_hidden",
    "48",
    "--data.batch_size",
    "8",
    "--data.block_size",
    "32",
    "--data.val_windows",
    "16",
    "--trainer.val_check_interval",
    "10",
    "--trainer.callbacks",
    "[]",
]


def _fit(root, steps, family, *extra):
    main(
        [
            "fit",
            *map(str, family),
            *QUIET,
            "--trainer.default_root_dir",
            str(root),
            "--trainer.max_steps",
            str(steps),
            *extra,
        ]
    )


def _max_difference(a_path, b_path) -> tuple[float, dict, dict]:
    a = torch.load(a_path, weights_only=True)
    b = torch.load(b_path, weights_only=True)
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    diff = max((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item() for k in a["state_dict"])
    return diff, a, b


def _exp_avg(ckpt) -> list[torch.Tensor]:
    return [s["exp_avg"] for opt in ckpt["optimizer_states"] for s in opt["state"].values()]


@pytest.mark.parametrize(
    ("family", "half", "total"), [("vae", 20, 40), ("gan", 20, 40), ("gpt", 12, 24), ("lstm", 12, 24)]
)
def test_resume_gives_the_same_parameters(tmp_path, monkeypatch, family, half, total):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["gen-lightning"])  # LightningCLI warns when pytest's own args are there
    args = {"vae": VAE, "gan": GAN, "gpt": GPT, "lstm": LSTM}[family]
    _fit(tmp_path / "straight", total, args)
    _fit(tmp_path / "resumed", half, args)
    first_half = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=True)
    # (A GAN's global_step counts G and D steps: a batch may pass max_steps by one.)
    assert half <= first_half["global_step"] <= half + 1
    _fit(tmp_path / "resumed", total, args, "--ckpt_path", "last")
    diff, straight, resumed = _max_difference(
        tmp_path / "straight/checkpoints/last.ckpt", tmp_path / "resumed/checkpoints/last.ckpt"
    )
    assert straight["global_step"] >= total
    assert diff <= 1e-6, f"{family}: parameters differ by {diff} after resume"
    for m1, m2 in zip(_exp_avg(straight), _exp_avg(resumed)):
        assert torch.allclose(m1, m2, atol=1e-6, rtol=0)
    # The resumed half really trained: its weights moved away from the first half's.
    moved = max(
        (resumed["state_dict"][k].double() - first_half["state_dict"][k].double()).abs().max().item()
        for k in resumed["state_dict"]
    )
    assert moved > 1e-4
