"""Checkpoints: a killed writer never destroys the last good file; untrusted pickles are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gen_lightning.checkpoint_io import atomic_torch_save, safe_torch_load
from gen_lightning.errors import UserError

WRITER = """
import io, sys, time, torch
from gen_lightning.checkpoint_io import atomic_torch_save

real_save = torch.save

def slow_save(obj, f):  # a slow disk: the bytes arrive in 1 MB pieces, 50 ms apart
    buf = io.BytesIO()
    real_save(obj, buf)
    data = buf.getvalue()
    for i in range(0, len(data), 1 << 20):
        f.write(data[i : i + (1 << 20)])
        f.flush()
        time.sleep(0.05)

torch.save = slow_save
print("writing", flush=True)
atomic_torch_save({"w": torch.zeros(4, 1024, 1024)}, sys.argv[1])  # 16 MB: ~0.8 s of writing
print("done", flush=True)
"""


def test_kill_9_during_write_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, target)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    # Wait until the temporary file has started to grow, then kill the writer without warning.
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 2_000_000 for p in tmp_path.glob(".last.ckpt.tmp-*")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    restored = safe_torch_load(target)
    assert restored["step"] == 1 and torch.equal(restored["w"], torch.ones(3))


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "model.ckpt"
    atomic_torch_save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="corrupt or truncated"):
        safe_torch_load(path)


class _MakesAFile:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = _MakesAFile()
    evil.marker = str(marker)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": evil}, path)
    assert not marker.exists()
    with pytest.raises(UserError, match="not plain data"):
        safe_torch_load(path)
    assert not marker.exists(), "loading must not execute code from the file"
    # Sanity: the file really would have run code under a plain unpickler.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_temporaries_of_dead_writers_are_removed_and_a_live_writers_kept(tmp_path):
    from gen_lightning.checkpoint_io import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.ckpt.tmp-{int(dead.stdout)}"
    live = tmp_path / f".last.ckpt.tmp-{os.getpid()}"
    other = tmp_path / ".notes.tmp-draft"  # not ours: no pid
    for path in (stale, live, other):
        path.write_bytes(b"x" * 10)
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
