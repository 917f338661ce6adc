"""TrainProbe: a callback the distributed tests add with `--config probe.yaml` to see inside each rank.

It prints one greppable line per rank when training starts and ends (rank, world size, node, step), and can
inject the faults the tests need: slow steps (to requeue a job while it runs), a rank that dies, a rank that
stops answering (what a GPU rank stuck in a NCCL collective looks like).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

import lightning as L


class TrainProbe(L.Callback):
    def __init__(
        self,
        step_seconds: float = 0.0,
        die_rank: Optional[int] = None,
        die_at_step: int = 3,
        stall_rank: Optional[int] = None,
        stall_seconds: float = 0.0,
    ) -> None:
        self.step_seconds = step_seconds
        self.die_rank = die_rank
        self.die_at_step = die_at_step
        self.stall_rank = stall_rank
        self.stall_seconds = stall_seconds

    def _say(self, what: str, trainer: L.Trainer) -> None:
        node = os.environ.get("SLURMD_NODENAME", socket.gethostname())
        print(
            f"probe {what} rank={trainer.global_rank} world={trainer.world_size} node_rank={trainer.node_rank} "
            f"node={node} step={trainer.global_step} restarts={os.environ.get('SLURM_RESTART_COUNT', 0)} "
            f"time={time.time():.2f}",
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say("start", trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say("end", trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.step_seconds:
            time.sleep(self.step_seconds)
        if trainer.global_step == self.die_at_step:
            if trainer.global_rank == self.die_rank:
                self._say("dies", trainer)
                sys.stderr.flush()
                os._exit(3)
            if trainer.global_rank == self.stall_rank:
                self._say("stalls", trainer)
                time.sleep(self.stall_seconds)


def probe_config(folder, **init_args) -> str:
    """Write a config file that adds TrainProbe(**init_args); pass it as the last `--config`. Runs need
    tests/slurm on PYTHONPATH (PROBE_PATH)."""
    import yaml

    path = Path(folder) / "probe.yaml"
    path.write_text(
        yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "probe.TrainProbe", "init_args": init_args}]}})
    )
    return str(path)


PROBE_PATH = str(Path(__file__).resolve().parent)


def probe_lines(output: str, what: str) -> list[dict]:
    """The probe's `what` lines ("start", "end", "dies", "stalls") as dicts of their fields."""
    lines = [ln for ln in output.splitlines() if ln.startswith(f"probe {what} ")]
    return [dict(field.split("=", 1) for field in ln.split()[2:]) for ln in lines]
