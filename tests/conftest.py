"""Shared test helpers.

Every end-to-end test runs the real `gen-lightning` console script in a subprocess, in a temporary
folder (pytest-timeout's per-test limit stops a hang; no wall-clock limits of our own, the machines slow
down 2-4x under load): multi-process (DDP) runs must not be started inside the pytest process
(Lightning's ddp launcher would re-run the whole pytest session as rank 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def pytest_sessionstart(session) -> None:
    import time

    session.config._matrix_started = time.monotonic()


def pytest_sessionfinish(session, exitstatus) -> None:
    import time

    from tests.matrix import report

    report.write_if_complete(time.monotonic() - getattr(session.config, "_matrix_started", time.monotonic()))


def pytest_configure(config) -> None:
    # The GAN and VAE configs compute FID on the features of a digits classifier, trained when missing from
    # the evaluator cache: one cache for the whole session (every test runs in its own folder), so it is
    # trained once (under a lock) instead of once per test. Subprocesses inherit it through cli_env.
    import tempfile

    os.environ.setdefault("GEN_LIGHTNING_EVALUATOR_CACHE", tempfile.mkdtemp(prefix="gen-lightning-evaluators-"))


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "WANDB_MODE": "disabled",  # tests about W&B set "offline" themselves
            "OMP_NUM_THREADS": "1",  # 2 cores: one thread per process keeps DDP runs from thrashing
            "PYTHONUNBUFFERED": "1",
            "WANDB_SILENT": "true",
        }
    )
    env.pop("WANDB_API_KEY", None)
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    """Run `gen-lightning ARGS` in `cwd`; returns the CompletedProcess (stdout+stderr as text)."""
    cmd = [sys.executable, "-m", "gen_lightning", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env or cli_env(), capture_output=True, text=True)


@pytest.fixture
def cli(tmp_path):
    """`cli(args...)` runs gen-lightning in a fresh temporary folder."""

    def _run(*args, env: dict[str, str] | None = None):
        return run_cli(list(args), tmp_path, env=env)

    _run.cwd = tmp_path
    return _run


def _group(report) -> str:
    keywords = report.keywords
    for marker in ("gpu", "slurm"):
        if marker in keywords:
            return marker
    if "deepspeed" in report.nodeid or "zero2" in report.nodeid or "zero3" in report.nodeid:
        return "deepspeed"
    return "slow" if "slow" in keywords else "core"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Which groups of tests ran and which were skipped, and why: the README promises this line."""
    groups: dict[str, dict[str, int]] = {}
    reasons: dict[str, set[str]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup") or not hasattr(report, "keywords"):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            group = _group(report)
            groups.setdefault(group, {}).setdefault(outcome, 0)
            groups[group][outcome] += 1
            if outcome == "skipped" and isinstance(report.longrepr, tuple):
                reasons.setdefault(group, set()).add(str(report.longrepr[2]).removeprefix("Skipped: ")[:200])
    deselected = len(terminalreporter.stats.get("deselected", []))
    terminalreporter.write_sep("-", "test groups")
    for group, counts in sorted(groups.items()):
        line = f"{group}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        if group in reasons:
            line += " -- skipped because: " + "; ".join(sorted(reasons[group]))
        terminalreporter.write_line(line)
    if deselected:
        terminalreporter.write_line(
            f"{deselected} not selected (the `gpu` tests need a CUDA GPU: run them with -m gpu)"
        )


@pytest.fixture(scope="session")
def fit_parser():
    """The parser `gen-lightning fit` uses, built once (~2 s), building nothing when it parses (as the sweep's
    parse-only CLI, gen_lightning/commands/sweep.py): parse `["fit", ...]` with it, or print a --help."""
    import warnings

    from gen_lightning.cli import GenLightningCLI, build_cli

    class ParseOnlyCLI(GenLightningCLI):
        def before_instantiate_classes(self) -> None:
            self.subcommand = None

        def instantiate_classes(self) -> None:
            return None

    with warnings.catch_warnings():  # Lightning warns when `args` and sys.argv (pytest's) are both present
        warnings.filterwarnings("ignore", message=".*args parameter is intended")
        return build_cli(["fit", "--config", str(CONFIGS / "vae" / "mlp_digits.yaml")], cli_class=ParseOnlyCLI).parser


@pytest.fixture
def cli_inprocess(tmp_path, monkeypatch, capsys):
    """The same entry point as the console script, in-process: config errors need no new interpreter."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["gen-lightning"])

    from gen_lightning.cli import main as cli_main
    from tests.helpers import CliResult

    def _run(*args, **_):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(list(args))
        out = capsys.readouterr()
        return CliResult(exit_info.value.code, out.out, out.err)

    _run.cwd = tmp_path
    return _run


@pytest.fixture(scope="module")
def cluster():
    """A real two-node Slurm cluster on this machine (tests/slurm/cluster.py), brought up once for each module
    that asks for it and torn down at its end; skips, saying why, where it cannot come up (not root, no Slurm)."""
    from tests.slurm.cluster import local_cluster

    with local_cluster() as up:
        yield up
