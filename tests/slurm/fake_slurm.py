"""Stand-ins for srun / scontrol / sbatch, to run the launch scripts' own logic with no Slurm installed.

`fake_slurm_bin(folder)` makes a bin folder to put first on PATH:
  srun      records its arguments (one per line) and the rendezvous/W&B variables it was given, exits $FAKE_SRUN_RC
  scontrol  `show hostnames LIST` prints the nodes in $FAKE_NODES
  sbatch    records its arguments and prints job id 4242
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/srun.args"
env | grep -E '^(MASTER_ADDR|MASTER_PORT|WANDB_RUN_ID|WANDB_MODE|WANDB_RESUME|SRUN_CPUS_PER_TASK)=' | sort > "$FAKE_LOG/srun.env"
exit "${FAKE_SRUN_RC:-0}"
"""
SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && { printf '%s\\n' $FAKE_NODES; exit 0; }
exit 1
"""
SBATCH = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/sbatch.args"
echo 4242
"""


def fake_slurm_bin(folder: Path) -> Path:
    bin_dir = folder / "fake-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL), ("sbatch", SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def fake_env(folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_", "MASTER_", "GENL_"))}
    env.update(PATH=f"{fake_slurm_bin(folder)}:{env['PATH']}", FAKE_LOG=str(folder), FAKE_NODES="n7 n8")
    env.update(extra)
    return env


def run_batch_script(script: Path, folder: Path, args: list[str], **env: str):
    """Run a batch script as Slurm would on the first node; returns (CompletedProcess, srun argv, srun env)."""
    (folder / "srun.args").unlink(missing_ok=True)
    result = subprocess.run(
        ["bash", str(script), *args],
        cwd=folder,
        env=fake_env(folder, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    srun_args = (folder / "srun.args").read_text().splitlines() if (folder / "srun.args").exists() else None
    srun_env = dict(ln.split("=", 1) for ln in (folder / "srun.env").read_text().splitlines()) if srun_args else {}
    return result, srun_args, srun_env


def job_env(job_id: int, nodes: int, tasks_per_node: int, restarts: int = 0) -> dict[str, str]:
    """The variables sbatch sets for a job on `nodes` nodes (see `man sbatch`, OUTPUT ENVIRONMENT VARIABLES)."""
    return dict(
        SLURM_JOB_ID=str(job_id),
        SLURM_JOB_NODELIST=f"n[7-{6 + nodes}]",
        SLURM_NNODES=str(nodes),
        SLURM_NTASKS_PER_NODE=str(tasks_per_node),
        SLURM_NTASKS=str(nodes * tasks_per_node),
        SLURM_CPUS_PER_TASK="8",
        SLURM_CLUSTER_NAME="test",
        SLURM_RESTART_COUNT=str(restarts),
    )


__all__ = ["fake_env", "fake_slurm_bin", "job_env", "run_batch_script"]
