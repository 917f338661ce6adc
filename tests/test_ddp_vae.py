"""Two CPU processes (gloo) through configs/trainer/ddp.yaml, the way a user runs it."""

from __future__ import annotations

import torch

from tests.conftest import CONFIGS


def test_conv_vae_runs_two_processes_to_the_end(cli):
    result = cli(
        "fit", "--config", CONFIGS / "trainer" / "ddp.yaml", "--config", CONFIGS / "vae" / "conv_digits.yaml",
        "--trainer.max_steps", "20", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output, "both ranks joined the process group"
    last = cli.cwd / "runs" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 20
