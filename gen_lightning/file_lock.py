"""An exclusive lock on a file, for artefacts that several processes may want to build at once.

Two runs started together (sweep trials, array tasks, a test suite's runs) that both miss a cached evaluator
would each train it; with the lock the second waits, then finds the file. `fcntl.flock` is released by the
kernel when its holder dies, so a killed builder never leaves a stale lock behind. POSIX only, like Slurm.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold `<path>.lock` exclusively for the block (the folder is created when missing)."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
