"""`gen-lightning submit`: an experiment as a Slurm job, from its configs and the node/GPU counts.

    gen-lightning submit --nodes 2 --gpus-per-node 4 --time 12:00:00 --partition gpu \
        --config configs/trainer/multinode.yaml --config configs/gpt/nano_stdlib.yaml --model.lr 3e-4
    gen-lightning submit --dry-run ...       # print the batch script, write and submit nothing

Every argument submit does not know is a `gen-lightning fit` argument; they are checked by the real
parser here, before the job waits in a queue, so a typo fails in a second instead of on the nodes.
The batch script is launch/slurm/train.sbatch with its #SBATCH defaults set from the options, the fit
arguments baked in (`set -- ...`), and GENL_CMD pointing at this Python, so the job runs the same
installation. It is written to runs/slurm/submitted/<job name>-<time>.sbatch (or --out) and passed to sbatch;
the file stays as the record of what ran and can be submitted again as it is.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gen_lightning.commands.flags import VerbParser
from gen_lightning.errors import UserError

TEMPLATE = Path(__file__).resolve().parents[2] / "launch" / "slurm" / "train.sbatch"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = VerbParser(
        prog="gen-lightning submit",
        allow_abbrev=False,
        description="Render launch/slurm/train.sbatch for an experiment and submit it with sbatch. Arguments "
        "not listed here are `gen-lightning fit` arguments (--config FILE, --model.lr 3e-4, ...).",
    )
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=1,
        help="GPUs per node; one task (process) per GPU (default 1; 0 = CPU-only nodes)",
    )
    p.add_argument("--tasks-per-node", type=int, help="processes per node on CPU-only nodes (default 1)")
    p.add_argument("--cpus-per-task", type=int, default=8, help="CPU cores per process, for data loading (default 8)")
    p.add_argument("--time", default="04:00:00", help="time limit, [D-]HH:MM:SS (default 04:00:00)")
    p.add_argument("--job-name", help="default: the last config file's name")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--account", help="Slurm account to charge")
    p.add_argument("--mem", help="memory per node, e.g. 64G (default: the cluster's)")
    p.add_argument("--out", help="where to write the batch script (default runs/slurm/submitted/<name>-<time>.sbatch)")
    p.add_argument("--dry-run", action="store_true", help="print the batch script; write and submit nothing")
    return p.parse_known_args(argv)


def tasks_per_node(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        raise UserError(f"--nodes must be >= 1, got {args.nodes}")
    if args.gpus_per_node < 0:
        raise UserError(f"--gpus-per-node must be >= 0, got {args.gpus_per_node}")
    if args.gpus_per_node > 0:
        if args.tasks_per_node not in (None, args.gpus_per_node):
            raise UserError(
                f"--tasks-per-node {args.tasks_per_node} with --gpus-per-node {args.gpus_per_node}: Lightning runs one "
                f"process per GPU; drop --tasks-per-node (it is only for CPU-only nodes, --gpus-per-node 0)"
            )
        return args.gpus_per_node
    return args.tasks_per_node or 1


def job_name(args: argparse.Namespace, fit_args: list[str]) -> str:
    if args.job_name:
        return args.job_name
    configs = [fit_args[i + 1] for i, a in enumerate(fit_args[:-1]) if a == "--config"]
    configs += [a.split("=", 1)[1] for a in fit_args if a.startswith("--config=")]
    return f"gl-{Path(configs[-1]).stem}" if configs else "gen-lightning"


def sbatch_options(args: argparse.Namespace, fit_args: list[str]) -> dict[str, str]:
    options = {
        "job-name": job_name(args, fit_args),
        "nodes": str(args.nodes),
        "ntasks-per-node": str(tasks_per_node(args)),
        "gpus-per-node": str(args.gpus_per_node),
        "cpus-per-task": str(args.cpus_per_task),
        "time": args.time,
        # The job starts where submit ran, so relative config paths mean what they meant here.
        "chdir": str(Path.cwd()),
    }
    for key in ("partition", "account", "mem"):
        if getattr(args, key):
            options[key] = getattr(args, key)
    return options


def render(template: str, options: dict[str, str], fit_args: list[str], python: str) -> str:
    """The template with its #SBATCH values replaced (new options added after them) and, before the script's
    first command, the fit arguments and the training command of this installation."""
    lines = template.splitlines()
    pending = dict(options)
    out = []
    for line in lines:
        match = re.match(r"#SBATCH --([\w-]+)=", line)
        if match and match.group(1) in pending:
            key = match.group(1)
            line = f"#SBATCH --{key}={pending.pop(key)}"
        out.append(line)
    last_sbatch = max(i for i, line in enumerate(out) if line.startswith("#SBATCH"))
    out[last_sbatch + 1 : last_sbatch + 1] = [f"#SBATCH --{k}={v}" for k, v in pending.items()]
    first_command = next(i for i, line in enumerate(out) if line.startswith("set -euo pipefail"))
    out[first_command:first_command] = [
        "# Written by `gen-lightning submit`: the experiment's `fit` arguments (more may follow on the sbatch",
        "# command line) and the installation that runs it (change with GENL_CMD).",
        "set -- " + " ".join(shlex.quote(a) for a in fit_args) + ' "$@"',
        f"export GENL_CMD=${{GENL_CMD:-{shlex.quote(python + ' -m gen_lightning')}}}",
        "",
    ]
    return "\n".join(out) + "\n"


def check_fit_args(fit_args: list[str]) -> None:
    if not fit_args:
        raise UserError(
            "nothing to train: give the experiment's `fit` arguments, e.g. --config configs/vae/mlp_digits.yaml"
        )
    from gen_lightning.commands.sweep import parse_run_config

    parse_run_config(["fit", *fit_args])  # raises UserError naming the bad key, as `gen-lightning fit` would


def main(argv: list[str]) -> int:
    args, fit_args = parse_args(argv)
    options = sbatch_options(args, fit_args)
    check_fit_args(fit_args)
    if not TEMPLATE.is_file():
        raise UserError(
            f"{TEMPLATE} not found: submit renders the repository's launch/slurm/train.sbatch; "
            f"run it from a source checkout (pip install -e .)"
        )
    script = render(TEMPLATE.read_text(), options, fit_args, sys.executable)
    if args.dry_run:
        print(script, end="")
        return 0
    path = Path(
        args.out
        or Path("runs") / "slurm" / "submitted" / f"{options['job-name']}-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    if shutil.which("sbatch") is None:
        raise UserError(
            f"wrote {path}, but sbatch is not on PATH: submit it from a Slurm login node with `sbatch {path}`"
        )
    result = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"sbatch refused {path}: {result.stderr.strip() or result.stdout.strip()}")
    job = result.stdout.strip().split(";")[0]
    print(f"submitted job {job}: {path}; log: slurm-{options['job-name']}-{job}.out (squeue -j {job}, scancel {job})")
    return 0
