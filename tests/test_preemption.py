"""A real signal to a real `gen-lightning fit`: it saves last.ckpt at the step it reached, exits 0,
and `--ckpt_path last` continues from that step."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests import helpers
from tests.conftest import cli_env, run_cli

TINY_VAE = [
    *helpers.TINY_VAE,
    "--trainer.logger",
    "false",
    "--trainer.default_root_dir",
    "out",
    "--checkpoint.every_n_train_steps",
    "5",
]


def _train_until_signalled(tmp_path, signum: int) -> tuple[subprocess.CompletedProcess, int]:
    """Start a long run, wait for its first checkpoint (training is under way), send `signum`."""
    cmd = [sys.executable, "-m", "gen_lightning", *map(str, TINY_VAE), "--trainer.max_steps", "1000000"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    last = tmp_path / "out/checkpoints/last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the signal"
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    match = re.search(rf"{signal.Signals(signum).name} received: stopped at step (\d+), saved (\S+)", out)
    assert match, out[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, ""), int(match.group(1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_last_checkpoint_and_exits_cleanly(tmp_path, signum):
    result, step = _train_until_signalled(tmp_path, signum)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Traceback" not in result.stdout
    saved = torch.load(tmp_path / "out/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == step >= 5  # the step it stopped at, not the earlier periodic save
    if signum == signal.SIGTERM:  # the next start continues from that step (SIGUSR1: same file, same path)
        resumed = run_cli([*TINY_VAE, "--trainer.max_steps", step + 3, "--ckpt_path", "last"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert (
            "Restoring states from the checkpoint path at out/checkpoints/last.ckpt" in resumed.stdout + resumed.stderr
        )
        final = torch.load(tmp_path / "out/checkpoints/last.ckpt", weights_only=True)
        assert final["global_step"] == step + 3
