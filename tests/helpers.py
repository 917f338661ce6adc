"""Helpers shared by test modules: the arguments of tiny quiet runs, a free port, what a folder holds, reading
what a run wrote (W&B offline runs, images). The sweep tests' helpers: tests/sweep_helpers.py; the metrics
tests' feature extractor and data: tests/metrics_helpers.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import CONFIGS, REPO, cli_env

if TYPE_CHECKING:
    import lightning as L

# No logger, progress bar or model summary.
QUIET = [
    "--trainer.logger",
    "false",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
# No logger or progress bar (the model summary printed).
QUIET_KEEP_SUMMARY = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
# Progress bar and model summary off, one validation batch, none of the config's callbacks (the logger as the
# config has it): the VAE on digits as small as it trains (TINY_VAE), for runs that must fail fast or write little.
QUIET_NO_CALLBACKS = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.callbacks",
    "[]",
]
TINY_VAE = [
    "fit",
    "--config",
    str(CONFIGS / "vae/mlp_digits.yaml"),
    "--model.hidden_dim",
    "16",
    "--model.latent_dim",
    "2",
    "--data.batch_size",
    "64",
    *QUIET_NO_CALLBACKS,
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(script: str, folder: Path, timeout: float = 120) -> list[dict]:
    """Run `script` as ranks 0 and 1 (argv: rank, port, folder); each writes folder/<rank>.json."""
    path = folder / "worker.py"
    path.write_text(textwrap.dedent(script))
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(path), str(rank), port, str(folder)],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out[-3000:]}"
    return [json.loads((folder / f"{rank}.json").read_text()) for rank in (0, 1)]


def tiny_trainer(tmp_path, max_steps: int, callbacks=(), logger=False, log_every_n_steps: int = 50) -> L.Trainer:
    """A one-CPU Trainer for in-process runs: no checkpoints, progress bar or summary, one validation batch."""
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=logger,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        log_every_n_steps=log_every_n_steps,
    )


def snapshot(folder) -> dict:
    """Every file under `folder` with its mtime and bytes: equal snapshots mean nothing was written there."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def unchanged(path):
    """Bytes and mtime of `path`, to compare after a refused command."""
    return path.read_bytes(), path.stat().st_mtime_ns


def assert_not_blank(png: Path) -> None:
    """The image shows something: not one flat colour (the black W&B grids had std 0)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.std() > 10, f"{png.name} is blank (std {pixels.std():.2f})"


def wandb_records(folder: Path) -> list[dict]:
    """Every record of the one offline W&B run under `folder`."""
    run_files = sorted(folder.rglob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, f"expected one offline run, found {run_files}"
    wandb_exe = Path(sys.executable).parent / "wandb"
    out = subprocess.run(
        [str(wandb_exe), "leet", "inspect", "--json", str(run_files[0])], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def assert_same_nonblank_image(wandb_png: Path, local_png: Path) -> None:
    import numpy as np
    from PIL import Image

    stored = np.asarray(Image.open(wandb_png).convert("RGB"))
    local = np.asarray(Image.open(local_png).convert("RGB"))
    assert stored.shape == local.shape, (stored.shape, local.shape)
    assert np.array_equal(stored, local), (
        f"W&B image differs from {local_png.name}: max {np.abs(stored.astype(int) - local).max()}"
    )
    assert stored.std() > 10, f"{wandb_png.name} is blank (std {stored.std():.2f})"


def history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def history_keys(records: list[dict]) -> set[str]:
    return {key for item in history(records) for key in item}


def merged_config(records: list[dict]) -> dict:
    config: dict = {}
    for r in records:
        if r["type"] == "config":
            config.update(r["config"].get("update", {}))
    return config


class TableLogger:
    """A logger with log_text only: records the tables a sample callback hands it."""

    def __init__(self):
        self.calls = []

    def log_text(self, key, columns, data, step):
        self.calls.append((key, columns, [list(r) for r in data], step))


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit 2, no traceback, exactly one `gen-lightning: error:` line, holding every fragment."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("gen-lightning: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
