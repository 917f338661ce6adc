"""launch/slurm/train.sbatch's own decisions, run with stand-in srun/scontrol (no Slurm needed, < 1 s):
what it passes to `gen-lightning fit`, the rendezvous and W&B variables, and which checkpoint a restart takes.
The real cluster runs are in test_slurm.py."""

from __future__ import annotations

import os
import time

from tests.conftest import REPO
from tests.slurm.fake_slurm import job_env, run_batch_script

TRAIN = REPO / "launch" / "slurm" / "train.sbatch"
SWEEP = REPO / "launch" / "slurm" / "sweep.sbatch"
USER_ARGS = [
    "--config",
    "configs/trainer/multinode.yaml",
    "--config",
    "configs/gpt/nano_stdlib.yaml",
    "--model.lr",
    "3e-4",
]


def value_after(args: list[str], flag: str) -> str:
    return args[len(args) - 1 - args[::-1].index(flag) + 1]  # the last occurrence wins, as in the CLI


def test_first_start_runs_fit_on_every_task_with_the_allocation_layout(tmp_path):
    result, srun, env = run_batch_script(TRAIN, tmp_path, USER_ARGS, **job_env(77, nodes=2, tasks_per_node=4))
    assert result.returncode == 0, result.stderr
    assert srun[0] == "--kill-on-bad-exit=1"
    fit = srun.index("fit")
    assert srun[fit + 1 : fit + 1 + len(USER_ARGS)] == USER_ARGS
    assert value_after(srun, "--trainer.num_nodes") == "2" and value_after(srun, "--trainer.devices") == "4"
    assert value_after(srun, "--trainer.default_root_dir") == "runs/slurm/77"
    assert "--ckpt_path" not in srun
    assert env == {
        "MASTER_ADDR": "n7",
        "MASTER_PORT": str(20000 + 77),
        "SRUN_CPUS_PER_TASK": "8",
        "WANDB_MODE": "offline",
        "WANDB_RESUME": "allow",
        "WANDB_RUN_ID": "test-77",
    }
    assert "wandb sync" in result.stdout


def test_genl_args_and_cmd_extend_the_command(tmp_path):
    result, srun, _ = run_batch_script(
        TRAIN,
        tmp_path,
        USER_ARGS,
        GENL_CMD="python3 -m gen_lightning",
        GENL_ARGS="--trainer.max_steps 9",
        **job_env(5, nodes=1, tasks_per_node=1),
    )
    assert result.returncode == 0, result.stderr
    assert srun[1:5] == ["python3", "-m", "gen_lightning", "fit"]
    assert value_after(srun, "--trainer.max_steps") == "9"


def restart(tmp_path, job: int, hpc_age: float | None, last_age: float | None):
    """Run the script as restart 1 of `job` with an hpc checkpoint and/or a last.ckpt of the given ages (s)."""
    now = time.time()
    if hpc_age is not None:
        hpc = tmp_path / "runs" / "slurm" / str(job) / "hpc_ckpt_1.ckpt"
        hpc.parent.mkdir(parents=True, exist_ok=True)
        hpc.write_bytes(b"x")
        os.utime(hpc, (now - hpc_age, now - hpc_age))
    if last_age is not None:
        last = tmp_path / "runs" / "gen-lightning" / f"test-{job}" / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True, exist_ok=True)
        last.write_bytes(b"x")
        os.utime(last, (now - last_age, now - last_age))
    result, srun, _ = run_batch_script(TRAIN, tmp_path, USER_ARGS, **job_env(job, 2, 1, restarts=1))
    assert result.returncode == 0, result.stderr
    return srun


def test_restart_after_sigusr1_lets_lightning_load_the_hpc_checkpoint(tmp_path):
    assert "--ckpt_path" not in restart(tmp_path, 11, hpc_age=10, last_age=100)


def test_restart_takes_last_ckpt_when_it_is_newer_than_the_hpc_checkpoint(tmp_path):
    srun = restart(tmp_path, 12, hpc_age=100, last_age=10)
    assert value_after(srun, "--ckpt_path") == "runs/gen-lightning/test-12/checkpoints/last.ckpt"


def test_restart_without_hpc_checkpoint_resumes_from_last(tmp_path):
    srun = restart(tmp_path, 13, hpc_age=None, last_age=10)
    assert value_after(srun, "--ckpt_path") == "runs/gen-lightning/test-13/checkpoints/last.ckpt"


def test_restart_before_any_checkpoint_starts_afresh(tmp_path):
    assert "--ckpt_path" not in restart(tmp_path, 14, hpc_age=None, last_age=None)


def test_a_failed_srun_fails_the_job(tmp_path):
    result, _, _ = run_batch_script(TRAIN, tmp_path, USER_ARGS, FAKE_SRUN_RC="3", **job_env(15, 1, 1))
    assert result.returncode == 3
    assert "wandb sync" in result.stdout  # the upload hint is printed even when training failed


def test_sweep_array_task_is_a_worker_on_the_shared_study(tmp_path):
    env = job_env(20, nodes=1, tasks_per_node=1) | {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_JOB_ID": "19"}
    args = ["configs/sweeps/vae_mlp_digits.yaml", "--count", "4", "--", "--trainer.max_epochs=1"]
    result, srun, _ = run_batch_script(SWEEP, tmp_path, args, GENL_CMD="python3 -m gen_lightning", **env)
    assert result.returncode == 0, result.stderr
    assert srun == [
        "--kill-on-bad-exit=1",
        "--ntasks=1",
        "python3",
        "-m",
        "gen_lightning",
        "sweep",
        "configs/sweeps/vae_mlp_digits.yaml",
        "--local",
        "--storage",
        "journal",
        *args[1:],
    ]
    _, srun, _ = run_batch_script(SWEEP, tmp_path, args, GENL_SWEEP_STORAGE="sqlite:////shared/s.db", **env)
    assert srun[srun.index("--storage") + 1] == "sqlite:////shared/s.db"
