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
Prints both ratios (verbs/import, typo/import). About 1-2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TYPO = ["fit", "--config", "configs/vae/mlp_digits.yaml", "--model.lrr", "1"]


def _run(cmd: list[str], cwd: Path, expect_rc: int, expect: str) -> float:
    # No bytecode written: a --before checkout is only read (its existing __pycache__ is used as it is).
    env = {**os.environ, "PYTHONPATH": str(cwd), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect_rc or expect not in proc.stdout + proc.stderr:
        sys.exit(f"{' '.join(cmd)} in {cwd}: exit {proc.returncode}, expected {expect_rc} and {expect!r}:\n"
                 f"{proc.stdout[-800:]}{proc.stderr[-800:]}")
    return elapsed


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
    for _ in range(args.repeats):
        for name, spec in commands.items():
            times[name].append(_run(*spec))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name:<16} median {med[name]:6.2f} s   ({', '.join(f'{t:.2f}' for t in ts)})")
    for tag in ("", " (before)") if args.before else ("",):
        print(f"verbs{tag}: {med['verbs' + tag]:.2f} s = {med['verbs' + tag] / med['import']:.2f}x import lightning"
              f" (goal < 1 s)")
        print(f"typo{tag}:  {med['typo' + tag]:.2f} s = {med['typo' + tag] / med['import']:.2f}x import lightning"
              f" (goal <= 1.5x)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
