"""A rank of a multi-process run died (kill -9, the OOM killer, a lost node): one line on the survivors.

Without this, the survivors end 5-40 s later in one of two ways, both walls of text: a gloo/NCCL traceback from
whichever collective was waiting (`RuntimeError: [...pair.cc:545] Read error ...: Connection reset by peer`), or,
on the launching process (rank 0), Lightning's child-process observer SIGKILLs everything, itself included
(exit 137, no word on the checkpoint). Here each survivor prints which rank died and what is on disk, and exits 2:

    gen-lightning: error: rank 1 (PID 4242) died (killed by SIGKILL); this run stopped at step 57; last.ckpt
    (step 57) is intact: continue with --ckpt_path last

Lightning's observer is replaced (not rewritten: the subclass only changes what it says and how it exits) by
`install()`, which the CLI calls where it starts. Which rank died: the launcher holds its children's processes
(the observer's list); a child whose parent (rank 0, the launcher) died is re-parented.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Optional

from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

_children: list = []  # the launcher's child processes (rank i + 1), once launched
_parent_pid = os.getppid()
_said = threading.Lock()  # the observer thread and the main thread may both see the death: one line
_state = {"step": None, "last": None}  # updated by the checkpoint callback and the training loop


def note_progress(step: int) -> None:
    _state["step"] = step


def note_last_checkpoint(path: str, step: int) -> None:
    _state["last"] = (path, step)


def _how(returncode: Optional[int]) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}" if returncode is not None else "gone"


def _who_died() -> str:
    # A peer's sockets close while the kernel tears it down, a moment before its exit status exists (a child)
    # or its children are re-parented (rank 0): look for up to 10 s.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for rank, proc in enumerate(_children, start=1):
            if proc.poll() not in (None, 0):
                return f"rank {rank} (PID {proc.pid}) died ({_how(proc.returncode)})"
        if not _children and os.getppid() != _parent_pid:
            return f"rank 0 (PID {_parent_pid}, the launching process) died"
        time.sleep(0.1)
    return "another rank (on another node, or not a process of this one) died or stopped answering"


def message(detail: Optional[str] = None) -> str:
    step = f" at step {_state['step']}" if _state["step"] is not None else ""
    if _state["last"] is None:
        saved = "no last.ckpt was written by this run yet"
    else:
        path, saved_step = _state["last"]
        if os.path.isdir(path):  # DeepSpeed writes its shards in place, not atomically
            saved = (
                f"the newest checkpoint is {path} (step {saved_step}): continue with --ckpt_path last, or from an "
                f"earlier checkpoint if the death came during a save"
            )
        else:
            saved = f"{os.path.basename(path)} (step {saved_step}) is intact: continue with --ckpt_path last"
    cause = f" ({detail})" if detail else ""
    return f"{_who_died()}{cause}; this run stopped{step}; {saved}"


_LOST_PEER = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Socket Timeout",
    "Connection refused",
    "NCCL communicator was aborted",
    "Timed out",
)


def lost_peer(err: BaseException) -> Optional[str]:
    """The one line for a collective that failed because a peer process is gone, else None."""
    import torch.distributed as dist

    seen = set()
    while err is not None and id(err) not in seen:
        text = str(err)
        distributed = isinstance(err, getattr(dist, "DistError", ())) or "gloo" in text or "NCCL" in text
        if distributed and any(mark in text for mark in _LOST_PEER):
            if not _said.acquire(blocking=False):  # the observer thread has said it and is ending the process
                os._exit(2)
            return message()
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


class DeadRankObserver(fabric_launcher._ChildProcessObserver):
    """Lightning's observer, but the launcher says which rank died and exits 2 instead of SIGKILL-ing itself."""

    def _run(self) -> bool:
        """Lightning's check (a poll of every child every few seconds), without its log line: ours follows."""
        return_codes = [proc.poll() for proc in self._child_processes]
        if all(code == 0 for code in return_codes):
            return True
        if any(return_codes):
            self._terminate_all()
            return True
        return False

    def _terminate_all(self) -> None:
        for proc in self._child_processes:
            if proc.poll() is None:
                proc.send_signal(self._termination_signal)
        if _said.acquire(blocking=False):
            print(f"gen-lightning: error: {message()}", file=sys.stderr, flush=True)
        os._exit(2)


def _launch_observer(child_processes: list) -> None:
    _children[:] = child_processes
    DeadRankObserver(main_pid=os.getpid(), child_processes=child_processes).start()


def install() -> None:
    """Use DeadRankObserver for the processes Lightning's DDP/DeepSpeed launcher starts."""
    pytorch_launcher._launch_process_observer = _launch_observer
