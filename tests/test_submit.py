"""`gen-lightning submit`: the batch script it renders, what it refuses, and the sbatch call (stand-in sbatch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gen_lightning.commands.submit import parse_args, tasks_per_node
from gen_lightning.errors import UserError
from tests.conftest import CONFIGS, cli_env
from tests.slurm.fake_slurm import fake_slurm_bin, job_env, run_batch_script

EXPERIMENT = [
    "--config",
    str(CONFIGS / "trainer" / "multinode.yaml"),
    "--config",
    str(CONFIGS / "vae" / "mlp_digits.yaml"),
    "--model.lr",
    "3e-4",
]
OPTIONS = ["--nodes", "2", "--gpus-per-node", "4", "--time", "01:30:00", "--partition", "gpu"]


def test_dry_run_prints_a_batch_script_that_runs_the_experiment(cli):
    result = cli("submit", *OPTIONS, "--dry-run", *EXPERIMENT)
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=01:30:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --job-name=gl-mlp_digits",
        f"#SBATCH --chdir={cli.cwd}",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
    ):
        assert line in script.splitlines(), line
    assert not (cli.cwd / "runs").exists()  # a dry run writes nothing
    path = cli.cwd / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    # Run as Slurm would: the baked-in experiment, then what sbatch's command line adds, on this Python.
    done, srun, _ = run_batch_script(
        path, cli.cwd, ["--trainer.max_steps", "7"], **job_env(9, nodes=2, tasks_per_node=4)
    )
    assert done.returncode == 0, done.stderr
    fit = srun.index("fit")
    assert srun[1:fit] == [sys.executable, "-m", "gen_lightning"]
    assert srun[fit + 1 : fit + 1 + len(EXPERIMENT) + 2] == [*EXPERIMENT, "--trainer.max_steps", "7"]


def test_submit_writes_the_script_and_hands_it_to_sbatch(cli):
    env = cli_env(PATH=f"{fake_slurm_bin(cli.cwd)}:{cli_env()['PATH']}", FAKE_LOG=str(cli.cwd))
    result = cli("submit", *OPTIONS, *EXPERIMENT, env=env)
    assert result.returncode == 0, result.stderr
    assert "submitted job 4242" in result.stdout
    (written,) = (cli.cwd / "runs" / "slurm" / "submitted").glob("gl-mlp_digits-*.sbatch")
    assert (cli.cwd / "sbatch.args").read_text().split() == ["--parsable", str(written.relative_to(cli.cwd))]
    script = written.read_text().splitlines()
    assert "#SBATCH --nodes=2" in script and "set -- " + " ".join(EXPERIMENT) + ' "$@"' in script


def test_a_config_mistake_is_refused_before_anything_is_submitted(cli):
    env = cli_env(PATH=f"{fake_slurm_bin(cli.cwd)}:{cli_env()['PATH']}", FAKE_LOG=str(cli.cwd))
    result = cli("submit", *OPTIONS, *EXPERIMENT, "--model.no_such_key", "1", env=env)
    assert result.returncode == 2
    assert "model.no_such_key" in result.stderr and "Traceback" not in result.stderr
    assert not (cli.cwd / "sbatch.args").exists() and not (cli.cwd / "runs").exists()


def test_gpu_nodes_run_one_task_per_gpu():
    args, _ = parse_args(["--gpus-per-node", "4"])
    assert tasks_per_node(args) == 4
    args, _ = parse_args(["--gpus-per-node", "0", "--tasks-per-node", "3"])
    assert tasks_per_node(args) == 3
    args, _ = parse_args(["--gpus-per-node", "4", "--tasks-per-node", "2"])
    with pytest.raises(UserError, match="one process per GPU"):
        tasks_per_node(args)
