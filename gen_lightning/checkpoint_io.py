"""Checkpoint files that are either the old one or the new one, never half of one.

Lightning's TorchCheckpointIO stages the bytes in a temporary file under the system temp folder and
moves it into place; when that folder is on another file system (often: /tmp is tmpfs, runs/ is on
NFS or a local disk) the move is a copy, and a kill -9 during the copy truncates `last.ckpt`. Here
the temporary file sits next to its target (same file system), is flushed to disk, then renamed over
the target with os.replace, which POSIX makes atomic.

Loading is `weights_only=True`: a checkpoint is data, and a crafted pickle must not run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gen_lightning.errors import UserError


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of writers that died mid-save (kill -9: `atomic_torch_save`'s cleanup never ran).
    A file whose writer is still running on this host is left alone; checkpoints are written by global rank 0
    only, so a writer on another host does not write into this run's folder."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _is_running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """torch.load with weights_only=True, and one clear line for a missing, truncated or unsafe file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint '{path}' is a folder, not a checkpoint file; give a .ckpt file")
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except RuntimeError as err:  # truncated zip / bad magic number
        raise UserError(
            f"checkpoint '{path}' is corrupt or truncated ({str(err).splitlines()[0]}); use an earlier checkpoint"
        ) from None
    except Exception as err:  # noqa: BLE001 - pickle.UnpicklingError from the weights_only unpickler
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise UserError(
                f"checkpoint '{path}' contains Python objects that are not plain data, so it was not "
                f"loaded (it could run code); load only checkpoints you trust"
            ) from None
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None):
        return safe_torch_load(path, map_location=map_location or "cpu")
