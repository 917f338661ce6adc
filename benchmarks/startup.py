"""Start-up time of `gen-lightning`: the verb list and a config typo, against `python -c "import lightning"`.

    python benchmarks/startup.py [--repeats 7] [--before DIR]

Commands, each a fresh interpreter (`python -m gen_lightning`, the console script's code), run in turn
A B C A B C ... (interleaved, so load changes hit every side alike); the median of each is reported:
  import     python -c "import lightning"                        (the floor any Lightning CLI pays)
  verbs      gen-lightning --help                                 (goal: < 1 s on an idle 2-core machine)
  typo       gen-lightning fit --config configs/vae/mlp_digits.yaml --model.lrr 1
                                                                  (goal: <= 1.5x import; must exit 2 with the key named)
`--before DIR`: also run verbs and typo from another checkout of the project (e.g. a worktree at the commit before
a change), interleaved with the others, so a before/after pair comes from the same run.
Prints both ratios (verbs/import, typo/import), of wall and of CPU time (user + system of the child). About 1-2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TYPO = ["fit", "--config", "configs/vae/mlp_digits.yaml", "--model.lrr", "1"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished children: each run is waited for
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], cwd: Path, expect_rc: int, expect: str) -> tuple[float, float]:
    # No bytecode written: a --before checkout is only read (its existing __pycache__ is used as it is).
    env = {
        **os.environ,
        "PYTHONPATH": str(cwd),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != expect_rc or expect not in proc.stdout + proc.stderr:
        sys.exit(
            f"{' '.join(cmd)} in {cwd}: exit {proc.returncode}, expected {expect_rc} and {expect!r}:\n"
            f"{proc.stdout[-800:]}{proc.stderr[-800:]}"
        )
    return elapsed, cpu


def _commands(repo: Path, tag: str) -> dict[str, tuple[list[str], Path, int, str]]:
    py = sys.executable
    return {
        f"verbs{tag}": ([py, "-m", "gen_lightning", "--help"], repo, 0, "fit"),
        f"typo{tag}": ([py, "-m", "gen_lightning", *TYPO], repo, 2, "model.lrr"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another checkout to measure in the same run (before a change)")
    args = parser.parse_args()

    commands = {"import": ([sys.executable, "-c", "import lightning"], REPO, 0, "")}
    commands.update(_commands(REPO, ""))
    if args.before:
        commands.update(_commands(args.before.resolve(), " (before)"))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; load average {load}")
    for spec in commands.values():  # warm the page cache once: the first start reads every .py/.pyc from disk
        _run(*spec)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, spec in commands.items():
            wall, cpu = _run(*spec)
            times[name].append(wall)
            cpus[name].append(cpu)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    cmed = {name: statistics.median(ts) for name, ts in cpus.items()}
    for name, ts in times.items():
        print(
            f"{name:<16} median {med[name]:6.2f} s wall, {cmed[name]:6.2f} s CPU   "
            f"(wall {', '.join(f'{t:.2f}' for t in ts)})"
        )
    # CPU time (user + system of the child) is what the start costs; other programs on a loaded machine
    # stretch the wall time but cannot take CPU time from it.
    for tag in ("", " (before)") if args.before else ("",):
        for what, goal in (("verbs", "goal < 1 s"), ("typo", "goal <= 1.5x")):
            key = what + tag
            print(
                f"{key}: {med[key]:.2f} s = {med[key] / med['import']:.2f}x import lightning wall, "
                f"{cmed[key] / cmed['import']:.2f}x CPU ({goal})"
            )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
