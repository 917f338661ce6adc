"""Many workers on one study: two started at once run disjoint trials; one killed with SIGKILL mid-trial
leaves a failed trial (its heartbeat stops), never a running or a lost one; --retry-failed runs it again.

One test, three waves of `gen-lightning sweep` processes on configs/sweeps/vae_mlp_digits.yaml as it is
(the default SQLite study in the sweep folder), because every wave is a few trial processes on 2 cores.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, cli_env
from tests.test_sweep import TINY, states, study_of, sweep_cmd, wandb_run

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
    env = cli_env(WANDB_MODE="offline")
    common = ["--count", "4", "--heartbeat", "1"]  # a trial is stale 3 s after its worker's last heartbeat

    # 1. Two workers at once: A's trials are long, B's short. A is killed (SIGKILL) while its trial trains.
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with open(logs[0], "w") as a_out, open(logs[1], "w") as b_out:
        a = subprocess.Popen(sweep_cmd(sweep, *common, "--", *TINY, "--trainer.max_epochs=500"), cwd=tmp_path, env=env,
                             stdout=a_out, stderr=subprocess.STDOUT)
        b = subprocess.Popen(sweep_cmd(sweep, *common, "--", *TINY), cwd=tmp_path, env=env,
                             stdout=b_out, stderr=subprocess.STDOUT)
        killed = wait_for(lambda: next((n for n, s in states(sweep_dir).items() if s["pid"] == a.pid
                                        and list((sweep_dir / str(n)).rglob("last.ckpt"))), None),
                          "a trial of worker A training", [a, b], logs)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=60)
        # The trial's own process dies with its worker (PR_SET_PDEATHSIG): nothing trains on unseen.
        wait_for(lambda: not processes_with(f"default_root_dir=runs/sweeps/vae_mlp_digits/{killed}"),
                 "the killed worker's trial process ending", [b], logs, timeout=60)
        b.wait(timeout=600)
    b_output = logs[1].read_text()
    assert b.returncode == 1, b_output[-3000:]  # the study holds a failed trial

    trials = study_of(sweep_dir, "vae_mlp_digits").trials
    recorded = states(sweep_dir)
    assert sorted(recorded) == [t.number for t in trials] == [0, 1, 2, 3], "four trials, each run once"
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4, "four different grid points"
    assert [n for n, s in recorded.items() if s["pid"] == a.pid] == [killed]
    assert {s["pid"] for n, s in recorded.items() if n != killed} == {b.pid}, "B ran all the others"
    assert trials[killed].state.name == "FAIL", "the killed worker's trial is failed, not running forever"
    assert recorded[killed]["status"] == "running"  # what its worker last wrote: it never came back
    assert all(t.state.name == "COMPLETE" for t in trials if t.number != killed)
    row = next(line for line in b_output.splitlines() if line.startswith("│") and f"│ {killed:>5} │" in line)
    assert "FAILED: no heartbeat from its worker: killed?" in row
    for t in trials:  # every trial a W&B run of the sweep's group, its parameters and state in it
        if t.number != killed:
            (run,) = (sweep_dir / str(t.number)).rglob("offline-run-*")
            seen = wandb_run(run)
            assert seen["name"] == f"vae_mlp_digits-{t.number}" and "sweep-vae_mlp_digits" in seen["tags"]
            assert seen["config"]["sweep"]["params"] == t.params and seen["summary"]["sweep/state"] == "complete"
            assert seen["summary"]["val/elbo"] == pytest.approx(t.value)
    records = subprocess.run(["wandb", "leet", "inspect", "--json", str(run)], capture_output=True, text=True,
                             env=env, timeout=120)
    assert '"run_group":"vae_mlp_digits"' in records.stdout  # the run record holds the group

    # 2. A new worker with --retry-failed runs the killed trial again, as a new trial with its parameters.
    c = subprocess.run(sweep_cmd(sweep, *common, "--retry-failed", "--", *TINY), cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    c_output = c.stdout + c.stderr
    assert c.returncode == 0, c_output[-3000:]
    assert f"trial {killed} queued again" in c_output
    trials = study_of(sweep_dir, "vae_mlp_digits").trials
    assert len(trials) == 5 and trials[4].state.name == "COMPLETE"
    assert trials[4].params == trials[killed].params and trials[4].system_attrs["failed_trial"] == killed
    assert states(sweep_dir)[4]["status"] == "complete"
    row = next(line for line in c_output.splitlines() if line.startswith("│") and f"│ {killed:>5} │" in line)
    assert "→ re-run as 4" in row

    # 3. The sweep is done: its W&B summary run ranks the trials, best first, as the study holds them.
    best = study_of(sweep_dir, "vae_mlp_digits").best_trial
    assert f"best: trial {best.number} val/elbo={best.value!r} {json.dumps(best.params)}" in c_output
    # Written by each worker that finds the sweep finished (B did, with the failure): one run id, resumed.
    summary_run = sorted((sweep_dir / "wandb").glob("offline-run-*"))[-1]
    seen = wandb_run(summary_run)
    assert seen["name"] == "vae_mlp_digits-summary" and seen["summary"]["best/trial"] == best.number
    assert seen["summary"]["trials/complete"] == 4 and seen["summary"]["trials/fail"] == 1
    table = json.loads((summary_run / "files" / seen["summary"]["sweep/trials"]["path"]).read_text())
    assert table["columns"][:2] == ["rank", "trial"]
    complete = [row for row in table["data"] if row[table["columns"].index("state")].startswith("complete")]
    assert [row[1] for row in complete][0] == best.number
    elbos = [row[table["columns"].index("val/elbo")] for row in complete]
    assert elbos == sorted(elbos, reverse=True) and len(elbos) == 4
