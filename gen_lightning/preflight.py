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
        raise UserError(f"{option} '{path}' is not a writable folder ({err.strerror or err}); "
                        f"choose another folder or fix its permissions") from None


def check_output_folders(trainer: L.Trainer) -> None:
    check_writable(trainer.default_root_dir, "trainer.default_root_dir")
    for logger in trainer.loggers:
        if getattr(logger, "save_dir", None):
            check_writable(logger.save_dir, f"the logger's save_dir ({type(logger).__name__})")


def _is_file(ckpt_path: Optional[str]) -> bool:
    return bool(ckpt_path) and ckpt_path not in ("last", "best", "hpc", "registry") and not Path(ckpt_path).is_dir()


def check_checkpoint_family(ckpt_path: Optional[str], model_config: Any) -> None:
    """Before Lightning's CLI applies the checkpoint's hyperparameters, which include its class: given a
    GPT config and a VAE checkpoint, it would quietly build and train a VAE on the GPT's data."""
    if not _is_file(ckpt_path):
        return
    checkpoint = safe_torch_load(ckpt_path)  # one line for a missing, truncated or unsafe file
    saved_class = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    wanted = model_config.get("class_path") if hasattr(model_config, "get") else None
    # By class name: either side may spell the module path differently (gen_lightning.models.VAEModule).
    if saved_class and wanted and saved_class.rsplit(".", 1)[-1] != wanted.rsplit(".", 1)[-1]:
        raise UserError(f"checkpoint '{ckpt_path}' is a {saved_class.rsplit('.', 1)[-1]}, this run builds a "
                        f"{wanted.rsplit('.', 1)[-1]}; give a checkpoint of the same model family (or the matching --config)")


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
        raise UserError(f"checkpoint '{ckpt_path}' does not fit this model: {len(missing)} parameters missing, "
                        f"{len(unexpected)} unexpected (e.g. {names}); was it written by another model or net?")
    for name, tensor in built.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise UserError(f"checkpoint '{ckpt_path}' does not fit this model: {name} is {tuple(saved[name].shape)} "
                            f"in the checkpoint, {tuple(tensor.shape)} here; use the checkpoint's model settings "
                            f"(size, vocab_size / data.tokenizer, image size)")
