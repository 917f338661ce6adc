"""launch/slurm/sweep.sbatch on the real two-node Slurm of tests/slurm/ (the cluster fixture of
tests/conftest.py, brought up once for this module): the two tasks of a job array, one per node, are two
workers on one study in a journal file on the shared filesystem, and run disjoint trials."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from gen_lightning.sweeps.storage import open_storage
from tests.conftest import CONFIGS, REPO, cli_env
from tests.sweep_helpers import TINY, states

pytestmark = pytest.mark.slurm

SWEEP_SBATCH = REPO / "launch" / "slurm" / "sweep.sbatch"


def test_two_array_tasks_on_two_nodes_share_one_journal_study(cluster, tmp_path):
    (tmp_path / "configs").symlink_to(CONFIGS)
    env = cli_env(**cluster.env, GENL_CMD=f"{sys.executable} -m gen_lightning")  # WANDB_MODE=disabled
    # --exclusive: a whole node per task, so the two workers run on n1 and n2.
    submit = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--array=0-1",
            "--exclusive",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            str(SWEEP_SBATCH),
            "configs/sweeps/vae_mlp_digits.yaml",
            "--count",
            "4",
            "--",
            *TINY,
        ],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    cluster.wait_until_gone(job, timeout=600)
    logs = {task: (tmp_path / f"slurm-gen-lightning-sweep-{job}_{task}.out").read_text() for task in (0, 1)}
    for task in (0, 1):
        assert cluster.job_field(f"{job}_{task}", "JobState") == "COMPLETED", logs[task][-4000:]

    sweep_dir = tmp_path / "runs" / "sweeps" / "vae_mlp_digits"
    study = optuna.load_study(study_name="vae_mlp_digits", storage=open_storage(str(sweep_dir / "study.journal")))
    ran = [t for t in study.trials if not t.user_attrs.get("surplus")]
    assert [t.number for t in ran] == sorted(states(sweep_dir)) and len(ran) == 4, "four trials, each run once"
    assert all(t.state.name == "COMPLETE" for t in ran)
    assert len({json.dumps(t.params, sort_keys=True) for t in ran}) == 4, "four different grid points"
    assert {t.user_attrs["host"] for t in ran} == {"n1", "n2"}, "both nodes' workers ran trials"
    assert {t.user_attrs["array_task"] for t in ran} == {"0", "1"}
    for t in ran:  # each trial's record is its worker's, on that worker's node
        recorded = states(sweep_dir)[t.number]
        assert recorded["host"] == t.user_attrs["host"] and recorded["status"] == "complete"
        assert recorded["array_task"] == t.user_attrs["array_task"]
