"""RunConfigSaver: the merged config, how the run was started and how it ended, in the run folder and W&B.

Lightning's stock SaveConfigCallback writes `config.yaml` into `trainer.log_dir`, which for the W&B
logger is the shared save_dir: the second run then refuses to start. Writing into the run's own
folder (next to its checkpoints) keeps one config per run and nothing is ever overwritten.

Every logger receives the merged config with `class_path`/`init_args` folded, so its keys read like
the command-line overrides (`model.lr`, `data.batch_size`), plus `command` (the exact command line,
secrets masked) and `git` (commit and dirty flag of the checkout the run was started from).
At the end of fit, `summary.json` in the run folder holds the final metrics; a sweep reads it (the
`GEN_LIGHTNING_SUMMARY_FILE` variable names a second copy) so it needs no W&B server to rank runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from gen_lightning.run_dir import run_dir

SUMMARY_FILE_ENV = "GEN_LIGHTNING_SUMMARY_FILE"
# `--wandb_api_key=...`, `token:...`: never let a secret typed on the command line reach a log.
_SECRET_ARG = re.compile(r"(?i)((?:api[_-]?key|token|secret|password)[^=:\s]*[=:])\S+")


def fold_init_args(node: Any) -> Any:
    """{"class_path": C, "init_args": {...}} -> {"class_path": C, ...}: keys as on the command line."""
    if isinstance(node, dict):
        folded = {k: fold_init_args(v) for k, v in node.items() if k != "init_args"}
        if isinstance(node.get("init_args"), dict):
            folded.update(fold_init_args(node["init_args"]))
        return folded
    if isinstance(node, list):
        return [fold_init_args(v) for v in node]
    return node


def command_line(argv: Optional[list[str]] = None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return _SECRET_ARG.sub(r"\1***", " ".join(["gen-lightning", *args]))


def git_state(folder: Path) -> Optional[dict[str, Any]]:
    """Commit and dirty flag of the git checkout holding `folder`; None outside one (or without git)."""

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    # Untracked files are left out: a run's own outputs (runs/, wandb/) would make every checkout dirty.
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def run_record(config: dict) -> dict:
    """What W&B and other loggers get: the folded config, the command line and the code version."""
    import gen_lightning

    record = fold_init_args(config)
    record["command"] = command_line()
    # The user's checkout if they run from one, else the checkout gen_lightning itself is installed from.
    package_root = Path(gen_lightning.__file__).resolve().parents[1]
    git = git_state(Path.cwd()) or git_state(package_root)
    if git is not None:
        record["git"] = git
    return record


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    metrics = {}
    for key, value in trainer.callback_metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):  # a non-scalar: not a metric to rank by
            continue
        if math.isfinite(number):
            metrics[key] = number
    return metrics


def end_of_run_summary(trainer: L.Trainer, summary: dict) -> str:
    """What a finished fit prints: where its files are, its best checkpoint, its final validation metrics and,
    for an offline W&B run, the command that uploads it."""
    checkpoint = trainer.checkpoint_callback
    lines = [f"run finished at step {summary['global_step']}: {summary['run_dir']}"]
    if checkpoint is not None:
        last = Path(checkpoint.dirpath or "") / "last.ckpt" if checkpoint.dirpath else None
        if last is not None and last.exists():
            lines.append(f"  last checkpoint: {last}")
        if checkpoint.best_model_path:
            score = summary["best_model_score"]
            lines.append(
                f"  best checkpoint: {checkpoint.best_model_path} ({checkpoint.monitor} = {score:.6g})"
                if score is not None
                else f"  best checkpoint: {checkpoint.best_model_path}"
            )
    validation = {k: v for k, v in summary["metrics"].items() if k.startswith("val/")}
    if validation:
        lines.append("  final validation: " + ", ".join(f"{k} {v:.6g}" for k, v in sorted(validation.items())))
    for logger in trainer.loggers:
        mode = getattr(logger, "mode", None)  # GenWandbLogger: offline / online / disabled
        if mode == "offline":
            run_folder = getattr(logger.experiment, "dir", None)
            offline = (
                Path(run_folder).parent if run_folder else Path(logger.save_dir or ".") / "wandb" / "offline-run-*"
            )
            lines.append(f"  W&B (offline): upload with `wandb sync {offline}`")
    return "\n".join(lines)


class RunConfigSaver(SaveConfigCallback):
    def __init__(
        self,
        parser,
        config,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = False,
    ) -> None:
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Called on rank 0 only.
        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.config_filename
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile)
        record = run_record(yaml.safe_load(self.parser.dump(self.config, skip_none=False)))
        for logger in trainer.loggers:
            logger.log_hyperparams(record)
        if stage == "fit":
            print(f"run folder: {folder}", flush=True)  # once; the progress bar no longer shows the run id

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        checkpoint = trainer.checkpoint_callback
        summary = {
            "metrics": final_metrics(trainer),
            "global_step": trainer.global_step,
            "run_dir": str(run_dir(trainer).resolve()),
            "best_model_score": (
                float(checkpoint.best_model_score)
                if checkpoint is not None and checkpoint.best_model_score is not None
                else None
            ),
        }
        targets = [run_dir(trainer) / "summary.json"]
        if os.environ.get(SUMMARY_FILE_ENV):
            targets.append(Path(os.environ[SUMMARY_FILE_ENV]))
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(summary, indent=2))
        print(end_of_run_summary(trainer, summary), flush=True)
