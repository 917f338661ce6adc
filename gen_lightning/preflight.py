"""Checks made before a run touches anything, so a mistake costs one line and no overwritten file.

- The output folders (trainer.default_root_dir, the logger's save_dir) can be created and written:
  otherwise Lightning would train for hours and fail at the first checkpoint.
- A `--ckpt_path` file is read (weights_only, one line for a missing/truncated/unsafe file) and must fit
  the model: same LightningModule class (checked before Lightning's CLI applies the checkpoint's
  hyperparameters), then, once built, the same parameter names and shapes. Lightning's
  own message is a multi-page "Error(s) in loading state_dict" traceback; here it is which checkpoint,
  which class or parameter, and what to do. Costs one extra read of the file (directories, i.e.
  sharded DeepSpeed/FSDP checkpoints, are left to their strategy).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import lightning as L

from gen_lightning.checkpoint_io import safe_torch_load
from gen_lightning.errors import UserError


def check_writable(folder: str | os.PathLike, option: str) -> None:
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(
            f"{option} '{path}' is not a writable folder ({err.strerror or err}); "
            f"choose another folder or fix its permissions"
        ) from None


def check_output_folders(trainer: L.Trainer) -> None:
    check_writable(trainer.default_root_dir, "trainer.default_root_dir")
    for logger in trainer.loggers:
        if getattr(logger, "save_dir", None):
            check_writable(logger.save_dir, f"the logger's save_dir ({type(logger).__name__})")


def _named_run_folder(trainer: L.Trainer) -> tuple[Optional[Path], str]:
    """The run folder of a run whose id is given (W&B: `--trainer.logger.init_args.id` or WANDB_RUN_ID), and
    how it was given; (None, "") when the logger picks a new id (a random W&B id, the next CSV version)."""
    from lightning.pytorch.loggers import WandbLogger

    if not trainer.loggers:
        return None, ""
    logger = trainer.loggers[0]
    run_id, given = logger.version, "--trainer.logger.init_args.id"  # W&B: the id given, None before the run starts
    if not isinstance(run_id, str) and isinstance(logger, WandbLogger) and os.environ.get("WANDB_RUN_ID"):
        run_id, given = os.environ["WANDB_RUN_ID"], "WANDB_RUN_ID"
    if not isinstance(run_id, str) or not run_id:
        return None, ""
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / run_id, given


def check_new_run(trainer: L.Trainer, ckpt_path: Optional[str], overwrite: bool) -> None:
    """A run started with the id of an existing run, and no --ckpt_path, would replace that run's config.yaml
    and summary.json and write its checkpoints among the old ones (`last-v1.ckpt` beside `last.ckpt`, or over
    it; stale `best-*` files): refused unless --overwrite."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if ckpt_path or overwrite:
        return
    # A requeued Slurm job is the same run: Lightning resumes its hpc checkpoint by itself, or it starts
    # again from scratch when it was stopped before any checkpoint (launch/slurm/train.sbatch).
    if SLURMEnvironment.detect() and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        return
    folder, given = _named_run_folder(trainer)
    if folder is None:
        return
    taken = [name for name in ("config.yaml", "summary.json") if (folder / name).exists()]
    if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir()):
        taken.append("checkpoints/")
    if taken:
        raise UserError(
            f"run '{folder.name}' ({given}) already exists: {folder} holds {', '.join(taken)}; continue it "
            f"with --ckpt_path last, give a new run id, or pass --overwrite to start it again in that folder"
        )


def _is_file(ckpt_path: Optional[str]) -> bool:
    return bool(ckpt_path) and ckpt_path not in ("last", "best", "hpc", "registry") and not Path(ckpt_path).is_dir()


# What marks a folder as a sharded checkpoint its strategy reads: DeepSpeed's `latest` tag file (or the per-network
# engines' list, strategies/deepspeed_engines.py), torch.distributed.checkpoint's `.metadata` (FSDP).
_SHARDED_MARKERS = ("latest", "engines.txt", ".metadata", "checkpoint")


def check_not_a_plain_folder(ckpt_path: Optional[str]) -> None:
    """A folder as --ckpt_path that no strategy reads (a run folder, checkpoints/ itself): "is a folder", with the
    file to give, instead of Lightning's "does not exist" or a traceback."""
    if not ckpt_path or not Path(ckpt_path).is_dir():
        return
    folder = Path(ckpt_path)
    if any((folder / marker).exists() for marker in _SHARDED_MARKERS):
        return  # left to its strategy (DeepSpeed, FSDP)
    files = sorted(folder.glob("*.ckpt")) or sorted(folder.glob("checkpoints/*.ckpt"))
    example = f" (e.g. --ckpt_path {files[0]})" if files else ""
    raise UserError(f"--ckpt_path '{folder}' is a folder, not a checkpoint file; give a .ckpt file{example}")


# The keys Lightning reads back: every restore needs the weights and the version (its migrations read it);
# continuing training also needs the optimizer and loop states.
_NEEDED = {"state_dict": "no model weights (state_dict)", "pytorch-lightning_version": "no Lightning version"}
_NEEDED_TO_RESUME = {"optimizer_states": "no optimizer states", "loops": "no loop state (step, epoch, data position)"}


def check_checkpoint_contents(ckpt_path: str, checkpoint: Any, subcommand: Optional[str]) -> None:
    """One line for a file Lightning would fail on with a KeyError/AttributeError traceback: not a dict, a bare
    state dict, weights only (`save_weights_only`), or from a Lightning before 2.0 (for fit)."""
    if not isinstance(checkpoint, dict):
        raise UserError(
            f"checkpoint '{ckpt_path}' is not a Lightning checkpoint (it holds a {type(checkpoint).__name__}, "
            f"not a dict); give a .ckpt file written by `gen-lightning fit`"
        )
    missing = [why for key, why in _NEEDED.items() if key not in checkpoint]
    if subcommand == "fit":
        missing += [why for key, why in _NEEDED_TO_RESUME.items() if key not in checkpoint]
    if missing:
        resume = " to resume training" if subcommand == "fit" else ""
        raise UserError(
            f"checkpoint '{ckpt_path}' cannot be used{resume}: it has {', '.join(missing)} (written with "
            f"save_weights_only, or not by Lightning); give a full checkpoint such as last.ckpt"
        )
    version = str(checkpoint["pytorch-lightning_version"])
    major = re.match(r"\d+", version)
    if subcommand == "fit" and (major is None or int(major.group()) < 2):
        raise UserError(
            f"checkpoint '{ckpt_path}' was written by Lightning {version}; resuming needs a checkpoint of "
            f"Lightning 2.x (its loop and data-loader state); use it to validate, test or sample, or "
            f"resume from a checkpoint of a current run"
        )


def check_checkpoint_family(ckpt_path: Optional[str], model_config: Any, subcommand: Optional[str] = None) -> None:
    """Before Lightning's CLI applies the checkpoint's hyperparameters, which include its class: given a
    GPT config and a VAE checkpoint, it would quietly build and train a VAE on the GPT's data. A folder no
    strategy reads and a file that is no full Lightning checkpoint are one line first."""
    check_not_a_plain_folder(ckpt_path)
    if not _is_file(ckpt_path):
        return
    checkpoint = safe_torch_load(ckpt_path)  # one line for a missing, truncated or unsafe file
    check_checkpoint_contents(ckpt_path, checkpoint, subcommand)
    saved_class = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    wanted = model_config.get("class_path") if hasattr(model_config, "get") else None
    # By class name: either side may spell the module path differently (gen_lightning.models.VAEModule).
    if saved_class and wanted and saved_class.rsplit(".", 1)[-1] != wanted.rsplit(".", 1)[-1]:
        raise UserError(
            f"checkpoint '{ckpt_path}' is a {saved_class.rsplit('.', 1)[-1]}, this run builds a "
            f"{wanted.rsplit('.', 1)[-1]}; give a checkpoint of the same model family (or the matching --config)"
        )


def check_checkpoint_fits(ckpt_path: Optional[str], model: L.LightningModule) -> None:
    """Parameter names and shapes, once the model is built: a checkpoint without hyperparameters, or
    built from data-derived sizes, can still disagree with it."""
    if not _is_file(ckpt_path):
        return
    saved, built = safe_torch_load(ckpt_path).get("state_dict", {}), model.state_dict()
    missing = sorted(set(built) - set(saved))
    unexpected = sorted(set(saved) - set(built))
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:3])
        raise UserError(
            f"checkpoint '{ckpt_path}' does not fit this model: {len(missing)} parameters missing, "
            f"{len(unexpected)} unexpected (e.g. {names}); was it written by another model or net?"
        )
    for name, tensor in built.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"checkpoint '{ckpt_path}' does not fit this model: {name} is {tuple(saved[name].shape)} "
                f"in the checkpoint, {tuple(tensor.shape)} here; use the checkpoint's model settings "
                f"(size, vocab_size / data.tokenizer, image size)"
            )
