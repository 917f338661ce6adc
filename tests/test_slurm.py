"""launch/slurm/train.sbatch on a real two-node Slurm cluster brought up on this machine.

tests/slurm/slurm_up.sh starts munged, slurmctld and one slurmd per node, each node in its own network
namespace with its own hostname (n1, n2), so MASTER_ADDR is a node name as on a real cluster. The cluster
(the `cluster` fixture of tests/conftest.py; tests/slurm/cluster.py) comes up once for this module and is
torn down at the end, also when a test fails. Needs root; Slurm 22.05 packages are installed with apt-get
when missing and GEN_LIGHTNING_INSTALL_SLURM=1 (as .ci/run sets); otherwise, or if that fails, the tests
skip, saying so.

Covered: a 2-node x 1-task CPU DDP job completes; a job resumes from its checkpoint after SIGUSR1
(Lightning's auto-requeue: the `--signal` path) and again after a hard `scontrol requeue` (from
last.ckpt, newer than the SIGUSR1 checkpoint); one rank dying ends the whole job at once (srun
--kill-on-bad-exit) although the other rank is stuck.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import CONFIGS
from tests.slurm.probe import probe_config, probe_lines

pytestmark = pytest.mark.slurm

# A tiny run: the classic VAE, narrow, a few steps; one CPU per task.
TINY = [
    "--config",
    CONFIGS / "trainer" / "multinode.yaml",
    "--config",
    CONFIGS / "vae" / "mlp_digits.yaml",
    "--data.batch_size",
    32,
    "--model.hidden_dim",
    64,
    "--trainer.limit_val_batches",
    2,
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def wait_for(condition, timeout: float, what: str, log: Path):
    start = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; log:\n"
                + (log.read_text()[-4000:] if log.exists() else "(no log)")
            )
        time.sleep(0.3)


def global_step(checkpoint: Path) -> int:
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    except (OSError, RuntimeError):  # not there yet
        return -1


def log_of(folder: Path, job: str) -> Path:
    return folder / f"slurm-gen-lightning-{job}.out"


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_two_node_ddp_job_completes(cluster, tmp_path):
    job = cluster.sbatch(
        tmp_path,
        [*TINY, "--config", probe_config(tmp_path), "--trainer.max_steps", 6, "--trainer.val_check_interval", 3],
    )
    cluster.wait_until_gone(job, timeout=240)
    output = read(log_of(tmp_path, job))
    assert cluster.job_field(job, "JobState") == "COMPLETED", output[-4000:]

    ends = sorted(probe_lines(output, "end"), key=lambda e: e["rank"])
    assert [(e["rank"], e["node_rank"], e["node"], e["world"], e["step"]) for e in ends] == [
        ("0", "0", "n1", "2", "6"),
        ("1", "1", "n2", "2", "6"),
    ]  # one process per node, one world of two
    assert "master n1:" in output  # the rendezvous is the first node, by name
    # One run, written once (by rank 0), in the W&B run folder named after the job.
    (last,) = tmp_path.glob("runs/*/ci-*/checkpoints/last.ckpt")
    assert last.parent.parent.name == f"ci-{job}"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6
    # Offline W&B on the compute nodes, and the command that uploads the run printed at the end.
    sync = re.search(r"wandb sync (\S+)", output.split("[train.sbatch] W&B logged offline")[-1])
    assert sync and list(tmp_path.glob(sync.group(1).removeprefix("./") + "/run-*.wandb"))


def test_requeued_job_resumes_from_its_checkpoints(cluster, tmp_path):
    job = cluster.sbatch(
        tmp_path,
        [
            *TINY,
            "--config",
            probe_config(tmp_path, step_seconds=0.25),
            "--trainer.max_steps",
            40,
            "--trainer.val_check_interval",
            20,
            "--checkpoint.every_n_train_steps",
            4,
        ],
    )
    log = log_of(tmp_path, job)
    starts = lambda restarts: [s for s in probe_lines(read(log), "start") if s["restarts"] == str(restarts)]  # noqa: E731

    # 1. SIGUSR1, as `--signal=SIGUSR1@90` sends it before the time limit: Lightning saves hpc_ckpt_1.ckpt
    #    and requeues the job, which resumes from the newest complete state: that checkpoint, or a last.ckpt
    #    written after it (on a slow machine the run may finish another periodic or exit save first).
    wait_for(lambda: len(starts(0)) == 2, 180, "the first attempt to train", log)
    time.sleep(1.5)
    cluster.run("scancel", "--signal=USR1", job)
    hpc = tmp_path / "runs" / "slurm" / job / "hpc_ckpt_1.ckpt"
    first = wait_for(lambda: len(starts(1)) == 2 and starts(1), 180, "the restart after SIGUSR1", log)
    hpc_step = global_step(hpc)
    (resumed_from,) = re.findall(r"\[train.sbatch\] restart 1 of job \S+: resuming from (\S+)", read(log))
    (first_step,) = {int(s["step"]) for s in first}  # both ranks at one step
    if Path(resumed_from).name == hpc.name:
        assert first_step == hpc_step > 0
    else:  # the run's last.ckpt, newer than hpc_ckpt_1 (by mtime, as the sbatch chooses)
        assert Path(resumed_from).name == "last.ckpt" and first_step >= hpc_step > 0, (
            resumed_from,
            first_step,
            hpc_step,
        )

    # 2. A requeue without warning (node failure, preemption): the run's last.ckpt, written after the
    #    SIGUSR1 checkpoint, is the newer state and the restart must take it, not hpc_ckpt_1.
    (last,) = wait_for(lambda: list(tmp_path.glob(f"runs/*/ci-{job}/checkpoints/last.ckpt")), 60, "last.ckpt", log)
    saved_step = wait_for(
        lambda: (step := global_step(last)) > hpc_step and step, 120, "a last.ckpt beyond the SIGUSR1 checkpoint", log
    )
    cluster.run("scontrol", "requeue", job)
    second = wait_for(lambda: len(starts(2)) == 2 and starts(2), 180, "the restart after scontrol requeue", log)
    step = int(second[0]["step"])
    assert {s["step"] for s in second} == {str(step)}
    assert step >= saved_step > hpc_step  # the newest last.ckpt (maybe written at the SIGTERM), not 0 or hpc's

    cluster.wait_until_gone(job, timeout=240)
    output = read(log)
    assert cluster.job_field(job, "JobState") == "COMPLETED", output[-4000:]
    assert cluster.job_field(job, "Restarts") == "2"
    assert {(e["rank"], e["step"]) for e in probe_lines(output, "end")} == {("0", "40"), ("1", "40")}


def test_a_dying_rank_ends_the_job_at_once(cluster, tmp_path):
    # Rank 1 exits at step 2 while rank 0 is stuck for 5 minutes (like a GPU rank waiting forever in a
    # NCCL collective): only srun --kill-on-bad-exit ends the job quickly.
    probe = probe_config(tmp_path, die_rank=1, die_at_step=2, stall_rank=0, stall_seconds=300)
    job = cluster.sbatch(tmp_path, [*TINY, "--config", probe, "--trainer.max_steps", 10])
    log = log_of(tmp_path, job)
    wait_for(lambda: probe_lines(read(log), "dies"), 240, "rank 1 to die", log)
    seconds = cluster.wait_until_gone(job, timeout=60)
    output = read(log)
    assert cluster.job_field(job, "JobState") == "FAILED", output[-4000:]
    assert seconds < 30
    assert re.search(r"srun: error: n2: task 1: Exited with exit code 3", output), output[-4000:]
