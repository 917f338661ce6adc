"""Where `sample`, `export` and `convert` write: checked before any work, so nothing is replaced unasked.

A file that exists is replaced only with `--overwrite`; a folder where a file is asked for (or the other
way round), a read-only file and a folder that cannot be written are one line each, before the model
is loaded. Plain `os`/`pathlib`: no library checks a target path this way before writing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gen_lightning.errors import UserError


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing folder above `path` must be a folder we may write in (it is created later)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} '{path}': '{parent}' is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"{option} '{path}': the folder '{parent}' is not writable; choose another path or fix its permissions"
        )


def check_output_file(path: str | os.PathLike, option: str, overwrite: bool, example: str = "samples.png") -> Path:
    """`path` may be written as a file: not a folder, not read-only, and replaced only with `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} '{path}' is a folder; give a file name, e.g. {option} {path / example}")
    if path.exists():
        if not overwrite:
            raise UserError(f"{option} '{path}' already exists; pass --overwrite to replace it, or choose another name")
        # Even root could replace it: a file without any write permission was made read-only on purpose.
        if not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
            raise UserError(f"{option} '{path}' is read-only; choose another name or make it writable (chmod u+w)")
    _check_parent(path, option)
    return path


def check_output_folder(path: str | os.PathLike, option: str, overwrite: bool) -> Path:
    """`path` may be written as a folder of files: not a file, and a non-empty one only with `overwrite`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} '{path}' is a file; give a folder to write into (created if missing)")
    if path.is_dir():
        if any(path.iterdir()) and not overwrite:
            raise UserError(
                f"{option} '{path}' is a folder that is not empty; pass --overwrite to replace its "
                f"files, or give a new folder"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{option} '{path}' is not writable; choose another folder or fix its permissions")
    else:
        _check_parent(path, option)
    return path
