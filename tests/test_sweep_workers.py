"""Many workers on one study: two started at once run disjoint trials; one killed with SIGKILL mid-trial
leaves a failed trial (its heartbeat stops), never a running or a lost one; --retry-failed runs it again.

One test, three waves of `gen-lightning sweep` processes on configs/sweeps/vae_mlp_digits.yaml as it is
(the default SQLite study in the sweep folder), because every wave is a few trial processes on 2 cores.
What the trials' W&B runs and the summary run hold is checked in test_sweep_bayes.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, cli_env
from tests.sweep_helpers import TINY, states, study_of, sweep_cmd

pytestmark = pytest.mark.slow


def processes_with(text: str) -> list[int]:
    """Pids of the processes whose command line holds `text`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return pids


def wait_for(condition, what: str, procs: list[subprocess.Popen], logs: list[Path], timeout: float = 300):
    """The first value of condition() that is not None or False."""
    deadline = time.time() + timeout
    while (value := condition()) is None or value is False:
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            tails = "\n".join(log.read_text()[-2000:] for log in logs)
            pytest.fail(f"{what} did not happen:\n{tails}")
        time.sleep(0.2)
    return value


def test_two_workers_share_one_study_and_a_killed_workers_trial_fails_then_runs_again(tmp_path):
    (tmp_path / "configs").symlink_to(CONFIGS)
    sweep = Path("configs/sweeps/vae_mlp_digits.yaml")
    sweep_dir = tmp_path / "runs" / "sweeps" / "vae_mlp_digits"
    env = cli_env()  # W&B disabled: what a trial's W&B run holds is test_sweep_bayes.py's
    common = ["--count", "3", "--heartbeat", "1"]  # a trial is stale 3 s after its worker's last heartbeat

    # 1. Two workers at once: A's trials are long, B's short. A is killed (SIGKILL) while its trial trains.
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with open(logs[0], "w") as a_out, open(logs[1], "w") as b_out:
        a = subprocess.Popen(
            sweep_cmd(sweep, *common, "--", *TINY, "--trainer.max_epochs=500"),
            cwd=tmp_path,
            env=env,
            stdout=a_out,
            stderr=subprocess.STDOUT,
        )
        b = subprocess.Popen(
            sweep_cmd(sweep, *common, "--", *TINY), cwd=tmp_path, env=env, stdout=b_out, stderr=subprocess.STDOUT
        )
        killed = wait_for(
            lambda: next(
                (
                    n
                    for n, s in states(sweep_dir).items()
                    if s["pid"] == a.pid and list((sweep_dir / str(n)).rglob("last.ckpt"))
                ),
                None,
            ),
            "a trial of worker A training",
            [a, b],
            logs,
        )
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=60)
        # The trial's own process dies with its worker (PR_SET_PDEATHSIG): nothing trains on unseen.
        wait_for(
            lambda: not processes_with(f"default_root_dir=runs/sweeps/vae_mlp_digits/{killed}"),
            "the killed worker's trial process ending",
            [b],
            logs,
            timeout=60,
        )
        b.wait(timeout=600)
    b_output = logs[1].read_text()

    trials = study_of(sweep_dir, "vae_mlp_digits").trials
    recorded = states(sweep_dir)
    assert sorted(recorded) == [t.number for t in trials] == [0, 1, 2], "three trials, each run once"
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3, "three different grid points"
    assert [n for n, s in recorded.items() if s["pid"] == a.pid] == [killed]
    assert {s["pid"] for n, s in recorded.items() if n != killed} == {b.pid}, "B ran all the others"
    assert all(t.state.name == "COMPLETE" for t in trials if t.number != killed)
    assert recorded[killed]["status"] == "running"  # what its worker last wrote: it never came back
    # B failed the killed trial at its end if 3 s had passed since A's last heartbeat (the usual case).
    assert trials[killed].state.name in ("FAIL", "RUNNING")
    assert b.returncode == (1 if trials[killed].state.name == "FAIL" else 0), b_output[-3000:]
    if trials[killed].state.name == "FAIL":
        row = next(line for line in b_output.splitlines() if line.startswith("│") and f"│ {killed:>5} │" in line)
        assert "FAILED: no heartbeat from its worker: killed?" in row

    # 2. A new worker: it fails the killed trial (no heartbeat), and --retry-failed runs it again, as a new
    #    trial with its parameters.
    c = subprocess.run(
        sweep_cmd(sweep, *common, "--retry-failed", "--", *TINY),
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    c_output = c.stdout + c.stderr
    assert c.returncode == 0, c_output[-3000:]
    assert f"trial {killed} queued again" in c_output
    trials = study_of(sweep_dir, "vae_mlp_digits").trials
    assert trials[killed].state.name == "FAIL", "the killed worker's trial is failed, not running forever"
    assert len(trials) == 4 and trials[3].state.name == "COMPLETE" and states(sweep_dir)[3]["status"] == "complete"
    assert trials[3].params == trials[killed].params and trials[3].system_attrs["failed_trial"] == killed
    row = next(line for line in c_output.splitlines() if line.startswith("│") and f"│ {killed:>5} │" in line)
    assert "FAILED: no heartbeat from its worker: killed? → re-run as 3" in row
    assert not list(tmp_path.rglob("wandb")), "WANDB_MODE=disabled writes nothing"
