"""Helpers shared by the sweep tests (test_sweep*.py, test_one_line_errors.py): the tiny trial, sweep files,
a sweep's trial states and Optuna study, a trial's offline W&B run, the `gen-lightning sweep --local` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import CONFIGS, cli_env

VAE = CONFIGS / "vae" / "mlp_digits.yaml"
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.hidden_dim=64",
]


def sweep_text(
    method: str = "grid",
    parameters: str = "{model.lr: {values: [0.1]}}",
    more: str = "",
    metric: str = "metric: {name: val/elbo}\n",
    command: str = f"[gen-lightning, fit, --config, {VAE}, '${{args}}']",
):
    return f"method: {method}\n{metric}{more}parameters: {parameters}\ncommand: {command}\n"


def states(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/state.json")}


def study_of(sweep_dir: Path, name: str, storage: str | None = None):
    import optuna

    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{sweep_dir / 'study.db'}")


def wandb_run(run_dir: Path) -> dict:
    """An offline W&B run as wandb itself reads it back: name, state, tags, config, summary."""
    out = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sweep_cmd(sweep: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gen_lightning", "sweep", str(sweep), "--local", *args]
