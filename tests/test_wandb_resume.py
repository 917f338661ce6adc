"""W&B and resuming: an unreachable server does not stop training; a resumed run is the same W&B run
in the same run folder, continuing at the saved step. No network traffic: the "server" is a closed
local port."""

from __future__ import annotations

import torch

from tests.conftest import cli_env
from tests.helpers import TINY_VAE


def test_unreachable_wandb_server_falls_back_to_offline(cli):
    env = cli_env(
        WANDB_MODE="online",
        WANDB_API_KEY="x" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",
        WANDB_INIT_TIMEOUT="3",
        WANDB_SILENT="false",
    )
    result = cli(*TINY_VAE, "--trainer.max_steps", "3", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B: cannot reach the server" in result.stderr
    (run_folder,) = (cli.cwd / "runs/gen-lightning").iterdir()
    assert torch.load(run_folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 3
    offline = list((cli.cwd / "runs/wandb").glob(f"offline-run-*-{run_folder.name}"))
    assert offline and list(offline[0].glob("run-*.wandb")), "the metrics were kept for `wandb sync`"


def test_resumed_run_is_the_same_wandb_run_and_run_folder(cli):
    env = cli_env(WANDB_MODE="offline")
    first = cli(*TINY_VAE, "--trainer.max_steps", "4", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_folder,) = (cli.cwd / "runs/gen-lightning").iterdir()
    second = cli(*TINY_VAE, "--trainer.max_steps", "7", "--ckpt_path", "last", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert list((cli.cwd / "runs/gen-lightning").iterdir()) == [run_folder]  # no second run folder
    assert torch.load(run_folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 7
    # Both processes wrote to the W&B run whose id names the folder (offline-run-<time>-<id>), and no other.
    offline = sorted((cli.cwd / "runs/wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(f"-{run_folder.name}") for p in offline)
