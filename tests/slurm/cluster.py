"""The real two-node Slurm cluster of tests/slurm/ (slurm_up.sh, slurm_down.sh) that test_slurm.py and
test_sweep_slurm.py run jobs on: `local_cluster()` brings it up and tears it down (the `cluster` fixture of
tests/conftest.py, once per module), skipping when it cannot (not root; Slurm missing and not to be installed)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env
from tests.slurm.probe import PROBE_PATH

SCRIPTS = REPO / "tests" / "slurm"
SBATCH = REPO / "launch" / "slurm" / "train.sbatch"
BINARIES = ("slurmctld", "slurmd", "sbatch", "munged", "ip", "unshare", "nsenter")
APT_INSTALL = (
    "export DEBIAN_FRONTEND=noninteractive; "
    # keep the packages' postinst scripts from starting system-wide munge/slurm services
    "if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; "
    "chmod 755 /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi; "
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge iproute2"
)
TWO_NODES = ["--nodes", "2", "--ntasks-per-node", "1", "--gpus-per-node", "0", "--cpus-per-task", "1"]
INSTALL_ENV = "GEN_LIGHTNING_INSTALL_SLURM"


class Cluster:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *cmd: str, check: bool = True) -> str:
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {result.stderr}")
        return result.stdout

    def sbatch(self, folder: Path, fit_args: list, job_env: dict[str, str] | None = None) -> str:
        env = cli_env(
            **self.env, GENL_CMD=f"{sys.executable} -m gen_lightning", PYTHONPATH=PROBE_PATH, **(job_env or {})
        )
        env.pop("WANDB_MODE")  # the sbatch file's own default (offline) is under test
        result = subprocess.run(
            ["sbatch", "--parsable", *TWO_NODES, str(SBATCH), *map(str, fit_args)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().split(";")[0]

    def job_field(self, job: str, field: str) -> str:
        match = re.search(rf"\b{field}=(\S+)", self.run("scontrol", "show", "job", job))
        return match.group(1) if match else ""

    def wait_until_gone(self, job: str, timeout: float) -> float:
        """Seconds until the job left the queue; fails after `timeout`."""
        start = time.monotonic()
        while self.run("squeue", "-h", "-j", job, check=False).strip():
            assert time.monotonic() - start < timeout, f"job {job} still in the queue after {timeout} s"
            time.sleep(0.3)
        return time.monotonic() - start


@contextlib.contextmanager
def local_cluster() -> Iterator[Cluster]:
    """Bring the cluster up (root; Slurm installed, with apt-get if INSTALL_ENV=1), yield it, tear it down."""
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root (daemons, network namespaces)")
    if any(shutil.which(b) is None for b in BINARIES):
        # System packages are installed only when asked (.ci/run asks): never behind a user's back.
        if os.environ.get(INSTALL_ENV) != "1":
            pytest.skip(
                f"Slurm is not installed (slurmctld, slurmd, sbatch, munged); install it with `apt-get install "
                f"slurmctld slurmd slurm-client munge iproute2` or set {INSTALL_ENV}=1 to let the tests do it"
            )
        install = subprocess.run(["bash", "-c", APT_INSTALL], capture_output=True, text=True)
        if install.returncode != 0 or any(shutil.which(b) is None for b in BINARIES):
            pytest.skip(f"Slurm is not installed and apt-get could not install it: {install.stderr.strip()[-300:]}")
    # munged refuses a socket below a folder that is not world-executable, as pytest's temp folders are.
    folder = Path(tempfile.mkdtemp(prefix="gen-lightning-slurm-"))
    folder.chmod(0o755)
    env = dict(
        os.environ,
        SLURMCI_DIR=str(folder / "cluster"),
        SLURMCI_TAG="glt",
        SLURMCI_NET="10.213.59",
        SLURMCI_PORT="36917",
        # A requeued job may start again after the credential lifetime; the scheduler looks every second.
        SLURMCI_CRED_EXPIRE="5",
        SLURMCI_SCHED_PARAMS="sched_interval=1,bf_interval=1",
        SLURMCI_KILL_WAIT="2",  # Lightning ignores SIGTERM under Slurm: a requeue waits this long for SIGKILL
        SLURM_CONF=str(folder / "cluster" / "etc" / "slurm.conf"),
    )
    try:
        up = subprocess.run([str(SCRIPTS / "slurm_up.sh")], env=env, capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, f"slurm_up.sh failed:\n{up.stdout}\n{up.stderr}"
        yield Cluster(env)
    finally:
        subprocess.run([str(SCRIPTS / "slurm_down.sh")], env=env, capture_output=True, text=True, timeout=180)
        shutil.rmtree(folder, ignore_errors=True)
