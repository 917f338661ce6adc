"""`gen-lightning sweep FILE --local`: run a W&B sweep file here, without a W&B server.

    gen-lightning sweep configs/sweeps/vae_mlp_digits.yaml --local             # every configuration
    gen-lightning sweep FILE --local --count 2                                 # the first 2
    gen-lightning sweep FILE --local --index $SLURM_ARRAY_TASK_ID              # exactly one (job arrays)
    gen-lightning sweep FILE --local --list                                    # show them, run nothing
    gen-lightning sweep FILE --local --count 2 -- --trainer.max_epochs=1       # extra args for every run

The same file works with a server (`wandb sweep FILE`, then `wandb agent ID`). Each configuration runs
as its own `gen-lightning` process, with the command line `wandb agent` would build, offline for W&B
(unless WANDB_MODE says otherwise), so a crash never takes the sweep down and DDP runs launch as usual:
the parameters are command-line arguments, which every rank parses identically.

Before anything runs, every configuration is parsed by the real CLI parser: a parameter the config does
not accept stops the sweep with one line. Everything about configuration i lives in `<dir>/<i>/`
(default dir: runs/sweeps/<sweep name>): `state.json` (params, status, metrics or error), `output.log`,
and the run's own folder (checkpoints, W&B offline run). A second invocation skips what is done or
failed (`--retry-failed` reruns failures) and runs the rest: an interrupted sweep resumes, and array
tasks writing different folders never race. At the end a table puts the runs' metric side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from gen_lightning.commands._sweep_spec import SweepSpec, expand_command, gen_lightning_args, load_sweep
from gen_lightning.errors import UserError

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="gen-lightning sweep",
        description="Run a W&B sweep file (grid or random) without a W&B server. Arguments after `--` are "
        "appended to every run's command line.",
    )
    parser.add_argument("file", help="W&B sweep YAML (method, metric, parameters, command)")
    parser.add_argument("--local", action="store_true", help="run here, each run offline (required: "
                        "with a W&B server use `wandb sweep FILE` and `wandb agent`)")
    parser.add_argument("--count", type=int, help="run at most N configurations (required for random)")
    parser.add_argument("--index", type=int, help="run only configuration I (0-based): one SLURM array task")
    parser.add_argument("--dir", help="folder of the sweep's state and runs (default runs/sweeps/<name>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random sweep's draws (default 0)")
    parser.add_argument("--list", action="store_true", help="print the configurations and their commands, run nothing")
    parser.add_argument("--retry-failed", action="store_true", help="run failed configurations again")
    return parser.parse_args(argv), extra


# -- checking the configurations against the real CLI ---------------------------------------------------
@contextmanager
def _quiet_seed_messages():
    seed_logger = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_logger.level
    seed_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        seed_logger.setLevel(level)


def parse_run_config(args: list[str]) -> Any:
    """Parse a run's arguments exactly as `gen-lightning` would, instantiating nothing. Raises UserError."""
    from gen_lightning.cli import GenLightningCLI, build_cli

    class ParseOnlyCLI(GenLightningCLI):
        def before_instantiate_classes(self) -> None:
            self.subcommand = None  # parsed and validated: neither build the classes nor run

        def instantiate_classes(self) -> None:
            return None

    with _quiet_seed_messages(), warnings.catch_warnings():
        # Lightning warns when `args` and sys.argv (here: the sweep's own) are both present.
        warnings.filterwarnings("ignore", message=".*args parameter is intended")
        return build_cli(args, cli_class=ParseOnlyCLI).config


def check_configuration(spec: SweepSpec, index: int, params: dict, command: list[str]) -> Any:
    args = gen_lightning_args(command)
    if args is None or not args or args[0] not in SUBCOMMANDS:
        raise UserError(
            f"{spec.path}: the command must run `gen-lightning {{{'|'.join(SUBCOMMANDS)}}} ...`, got "
            f"{' '.join(command)!r}; see configs/sweeps/ for examples"
        )
    try:
        return parse_run_config(args)
    except UserError as err:
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        raise UserError(f"{spec.path}: configuration {index} ({shown}) is rejected: {err}") from None


def sweep_overrides(config: Any, subcommand: str, folder: Path) -> list[str]:
    """Put a run's files in its sweep folder: Lightning's root dir and, if it has one, the logger's save_dir."""
    section = getattr(config, subcommand, config)
    overrides = [f"--trainer.default_root_dir={folder}"]
    logger = getattr(section.trainer, "logger", None)
    init_args = getattr(logger, "init_args", None)
    if init_args is not None and "save_dir" in vars(init_args):
        overrides.append(f"--trainer.logger.init_args.save_dir={folder}")
    return overrides


# -- state: one folder per configuration ----------------------------------------------------------------
def read_state(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(folder: Path, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"state.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(folder / "state.json")  # atomic: a kill never leaves half a state file


def running_elsewhere(state: dict) -> bool:
    """A configuration another live process (e.g. a concurrent array task) is running right now."""
    if state.get("status") != "running" or state.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return int(state["pid"]) != os.getpid()


def should_run(state: Optional[dict], retry_failed: bool) -> bool:
    if state is None:
        return True
    if state["status"] == "done" or running_elsewhere(state):
        return False
    return state["status"] != "failed" or retry_failed


# -- running one configuration ------------------------------------------------------------------------
def local_command(command: list[str]) -> list[str]:
    """`[/usr/bin/env] gen-lightning ...` -> this interpreter's gen_lightning, whatever PATH holds."""
    args = gen_lightning_args(command)
    return [sys.executable, "-m", "gen_lightning", *args]


def error_line(output_lines: list[str], returncode: int) -> str:
    lines = [ln.strip() for ln in output_lines if ln.strip()]
    for line in reversed(lines):
        if line.startswith("gen-lightning: error:"):
            return line.removeprefix("gen-lightning: error:").strip()
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return line
    return f"exit code {returncode}"


class _Terminated(Exception):
    """SIGTERM (scancel, a kill): stop like Ctrl-C, leaving the configuration to run again on resume."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def run_configuration(spec: SweepSpec, index: int, params: dict, command: list[str], folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    summary_file = folder / "summary.json"
    summary_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")  # --local: no server; `wandb sync` uploads later
    env["WANDB_NAME"] = f"{spec.name}-{index}"
    env["WANDB_TAGS"] = f"sweep-{spec.name}"[:64]
    env["GEN_LIGHTNING_SUMMARY_FILE"] = str(summary_file)
    state = {"index": index, "params": params, "command": command, "status": "running",
             "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    start = time.perf_counter()
    output: list[str] = []
    proc: Optional[subprocess.Popen] = None
    try:  # SIGTERM raises _Terminated from here on (installed by main)
        write_state(folder, state)
        proc = subprocess.Popen(local_command(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, bufsize=1)
        with open(folder / "output.log", "w") as log:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                output.append(line)
                del output[:-200]  # the tail is enough to find the error
        returncode = proc.wait()
    except (KeyboardInterrupt, _Terminated):
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # Lightning shuts down gracefully on SIGINT
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        write_state(folder, {**state, "status": "interrupted"})
        raise KeyboardInterrupt from None
    state["seconds"] = round(time.perf_counter() - start, 1)
    if returncode == 0 and summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        state.update(status="done", metrics=summary["metrics"], run_dir=summary["run_dir"])
    elif returncode == 0:
        state.update(status="failed", returncode=0, error="the run wrote no summary.json: sweeps rank `fit` runs")
    else:
        state.update(status="failed", returncode=returncode, error=error_line(output, returncode))
    write_state(folder, state)
    return state


# -- the summary --------------------------------------------------------------------------------------
def best_index(spec: SweepSpec, states: list[dict]) -> Optional[int]:
    scored = [s for s in states if s.get("status") == "done" and spec.metric in s.get("metrics", {})]
    if not scored:
        return None
    pick = max if spec.goal == "maximize" else min
    return pick(scored, key=lambda s: s["metrics"][spec.metric])["index"]


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(spec: SweepSpec, states: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    best = best_index(spec, states)
    arrow = "↑" if spec.goal == "maximize" else "↓"
    table = Table(title=f"sweep {spec.name} ({spec.method}): {len(states)} configurations")
    table.add_column("#", justify="right")
    for name in spec.parameters:
        table.add_column(name, justify="right")
    metric_column = f"{spec.metric} {arrow}" if spec.metric else "metric"
    table.add_column(metric_column, justify="right")
    table.add_column("status")
    table.add_column("time", justify="right")
    for state in states:
        status = state.get("status", "pending")
        metric = state.get("metrics", {}).get(spec.metric) if spec.metric else None
        mark = " ★" if state["index"] == best else ""
        shown_status = f"[red]FAILED: {state.get('error', '')}[/red]" if status == "failed" else status
        table.add_row(
            str(state["index"]),
            *[format_value(state["params"].get(name)) for name in spec.parameters],
            (format_value(metric) if metric is not None else "-") + mark,
            shown_status,
            f"{state['seconds']:.0f}s" if "seconds" in state else "-",
        )
    # A file or pipe gets the full width: the table is the result, it must not be cut.
    Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False).print(table)


# -- the verb -----------------------------------------------------------------------------------------
def plan(spec: SweepSpec, args: argparse.Namespace, extra: list[str]) -> list[tuple]:
    """(index, params, command, folder, state) of each configuration to consider, all checked first."""
    indices = [args.index] if args.index is not None else list(range(spec.size(args.count)))
    root = Path(args.dir or Path("runs") / "sweeps" / spec.name)
    plans = []
    for index in indices:
        params = spec.configuration(index, args.seed)
        command = expand_command(spec, params) + extra
        config = check_configuration(spec, index, params, command)
        folder = root / str(index)
        state = read_state(folder)
        if state is not None and state.get("params") != json.loads(json.dumps(params, default=str)):
            raise UserError(
                f"{folder} holds configuration {index} as {state.get('params')}, the sweep file now gives "
                f"{params}; start a new sweep with --dir NEW_DIR (or delete {root})"
            )
        subcommand = gen_lightning_args(command)[0]
        plans.append((index, params, command + sweep_overrides(config, subcommand, folder), folder, state))
    return plans


def main(argv: list[str]) -> int:
    args, extra = parse_args(argv)
    if not args.local:
        raise UserError(
            "sweep runs without a W&B server only with --local; with a server run `wandb sweep "
            f"{args.file}` and then `wandb agent <sweep id>`"
        )
    spec = load_sweep(args.file)
    plans = plan(spec, args, extra)
    if args.list:
        for index, params, command, _, state in plans:
            print(f"{index}\t{state['status'] if state else 'pending'}\t{json.dumps(params)}\t{' '.join(command)}")
        print(f"{len(plans)} configurations")
        return 0
    signal.signal(signal.SIGTERM, _raise_terminated)  # scancel / kill: stop like Ctrl-C, resumable
    states = []
    for position, (index, params, command, folder, state) in enumerate(plans, 1):
        if should_run(state, args.retry_failed):
            print(f"[sweep {spec.name}] configuration {index} ({position}/{len(plans)}): "
                  + " ".join(f"{k}={v}" for k, v in params.items()), flush=True)
            try:
                state = run_configuration(spec, index, params, command, folder)
            except KeyboardInterrupt:
                print(f"[sweep {spec.name}] interrupted at configuration {index}; the same command resumes "
                      "with the configurations not yet done", file=sys.stderr)
                return 130
        else:
            print(f"[sweep {spec.name}] configuration {index}: {state['status']}, skipped", flush=True)
        states.append(state)
    print_summary(spec, states)
    return 1 if any(s.get("status") == "failed" for s in states) else 0
