"""`gen-lightning sweep FILE --local`: a W&B sweep file searched by Optuna, here or on many nodes at once.

    gen-lightning sweep configs/sweeps/vae_mlp_digits.yaml --local              # the whole grid
    gen-lightning sweep configs/sweeps/vae_bayes_hyperband.yaml --local --count 12   # bayes + hyperband
    gen-lightning sweep FILE --local --storage journal                         # a study many nodes share
    gen-lightning sweep FILE --local --list                                    # the study's trials, run nothing
    gen-lightning sweep FILE --local --retry-failed                            # re-queue failed trials, go on
    gen-lightning sweep FILE --local --count 4 -- --trainer.max_epochs=1       # extra args for every trial

The same file works with a W&B server (`wandb sweep FILE`, then `wandb agent ID`). Here the file
becomes an Optuna study (gen_lightning/sweeps/): every invocation is a *worker* that pulls trials
from the study until the sweep's budget (the grid, --count, run_cap) is handed out, so any number of
workers, processes or SLURM array tasks or nodes, share one sweep, and running the command again
resumes it. Each trial is its own `gen-lightning fit` process in `<dir>/<trial>/`.

What this file does that Optuna does not: checking every parameter value with the real CLI parser
before anything starts (one line, exit 2), putting each run's files in its trial folder, and the verb's
own options. Optuna does the rest: sampling, pruning, the shared state and resume, the heartbeat.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gen_lightning.commands.flags import VerbParser
from gen_lightning.errors import UserError

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = VerbParser(
        prog="gen-lightning sweep",
        description="Run a W&B sweep file (grid, random, bayes; hyperband early termination) on an Optuna "
        "study, without a W&B server. Arguments after `--` are appended to every trial's command line.",
    )
    parser.add_argument("file", help="W&B sweep YAML (method, metric, parameters, early_terminate, command)")
    parser.add_argument(
        "--local",
        action="store_true",
        help="search here with Optuna (required: with a W&B server use `wandb sweep FILE` and `wandb agent`)",
    )
    parser.add_argument(
        "--count",
        type=int,
        help="the sweep's number of trials, all workers together "
        "(random and bayes need it or run_cap; a grid is capped by it)",
    )
    parser.add_argument(
        "--storage",
        help="the study: a database URL (sqlite:///..., postgresql://...), "
        "`journal` (a journal file in the sweep folder: shared filesystems, SLURM) or a journal "
        "file's path; default: SQLite <dir>/study.db",
    )
    parser.add_argument("--dir", help="folder of the sweep's trials (default runs/sweeps/<name>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler (per trial: see docs/sweeps.md)")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="seconds between a worker's heartbeats; a "
        "trial without one for 3 of them is failed (its worker was killed). Default 30",
    )
    parser.add_argument(
        "--index",
        type=int,
        help="run one trial and stop: a job-array task (its index is "
        "recorded with the trial; the study picks the configuration)",
    )
    parser.add_argument("--list", action="store_true", help="print the study's trials, run nothing")
    parser.add_argument(
        "--retry-failed", action="store_true", help="queue failed trials again (same parameters) before going on"
    )
    args = parser.parse_args(argv)
    for name in ("count", "heartbeat"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args, extra


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


def check_configuration(spec, params: dict, command: list[str]) -> Any:
    from gen_lightning.sweeps.spec import gen_lightning_args

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
        raise UserError(f"{spec.path}: a configuration ({shown}) is rejected: {err}") from None


def check_configurations(spec, extra: list[str]) -> Any:
    """Parse configurations giving every parameter each value (or bound); the first one's config."""
    from gen_lightning.sweeps.spec import expand_command
    from gen_lightning.sweeps.trial import CALLBACK

    configs = [
        check_configuration(spec, params, expand_command(spec, params) + extra + [f"--trainer.callbacks+={CALLBACK}"])
        for params in spec.covering_configurations()
    ]
    return configs[0]


def logger_args(config: Any, subcommand: str) -> dict:
    section = getattr(config, subcommand, config)
    logger = getattr(section.trainer, "logger", None)
    init_args = getattr(logger, "init_args", None)
    return dict(vars(init_args)) if init_args is not None else {}


def run_overrides(logger: dict, spec_name: str):
    """(trial folder, number) -> arguments that put the run's files in its folder and name its W&B run."""

    def overrides(folder: Path, number: int) -> list[str]:
        args = [f"--trainer.default_root_dir={folder}"]
        for key, value in (("save_dir", folder), ("group", spec_name), ("name", f"{spec_name}-{number}")):
            if key in logger:
                args.append(f"--trainer.logger.init_args.{key}={value}")
        return args

    return overrides


def check_folder(root: Path, study_name: str, storage: str) -> None:
    """Trial folders in `root` must be this study's: nothing of another sweep is overwritten."""
    import json

    for state_file in sorted(root.glob("*/state.json")):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (state.get("study"), state.get("storage")) != (study_name, storage):
            owner = f"study {state.get('study')} in {state.get('storage')}" if "study" in state else "an older sweep"
            raise UserError(
                f"{root} holds trials of {owner}, not of study {study_name} in {storage}; start this "
                "sweep in another folder with --dir NEW_DIR (or delete the old one)"
            )


# -- the verb -----------------------------------------------------------------------------------------
def list_trials(spec, study, budget: int) -> None:
    from gen_lightning.sweeps.report import rows

    table = sorted(rows(spec, study), key=lambda r: r["trial"])
    for row in table:
        params = {name: row[name] for name in spec.parameters}
        print(f"{row['trial']}\t{row['state']}\t{row[spec.metric] if row[spec.metric] is not None else '-'}\t{params}")
    print(f"{len(table)} trials of {budget}")


def main(argv: list[str]) -> int:
    args, extra = parse_args(argv)
    if not args.local:
        raise UserError(
            "sweep runs without a W&B server only with --local; with a server run `wandb sweep "
            f"{args.file}` and then `wandb agent <sweep id>`"
        )
    from gen_lightning.sweeps.spec import gen_lightning_args, load_sweep
    from gen_lightning.sweeps.storage import is_in, storage_url

    spec = load_sweep(args.file)
    budget = spec.budget(args.count)
    config = check_configurations(spec, extra)  # every mistake in the file is found before anything starts
    root = Path(args.dir or Path("runs") / "sweeps" / spec.name)
    url = storage_url(args.storage, root)
    if args.list and is_in(url, root) and not Path(url.removeprefix("sqlite:///")).exists():
        print(f"0 trials of {budget} (no study yet in {root})")
        return 0
    check_folder(root, spec.name, url)

    import optuna

    from gen_lightning.sweeps.queue import (
        StopWhenDone,
        open_failures,
        requeue,
        work_left,
    )
    from gen_lightning.sweeps.report import log_summary_run, print_summary
    from gen_lightning.sweeps.storage import fail_stale_trials, open_study
    from gen_lightning.sweeps.trial import (
        Surplus,
        TrialFailed,
        TrialRunner,
        raise_terminated,
    )

    if is_in(url, root):
        root.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, url, args.heartbeat, args.seed)
    fail_stale_trials(study)  # trials of killed workers are failed before anything counts or re-queues them
    if args.list:
        list_trials(spec, study, budget)
        return 0
    if args.retry_failed:
        for trial in open_failures(study.get_trials(deepcopy=False)):
            requeue(study, trial)
            print(f"[sweep {spec.name}] trial {trial.number} queued again", flush=True)
    logger = logger_args(config, (gen_lightning_args(spec.command) or ["fit"])[0])
    array_task = args.index if args.index is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
    runner = TrialRunner(spec, root, url, args.seed, budget, extra, run_overrides(logger, spec.name), array_task)
    _quiet_expected_failures()
    signal.signal(signal.SIGTERM, raise_terminated)  # scancel / kill: stop like Ctrl-C, the trial runs again
    try:
        if work_left(study, budget):
            study.optimize(
                runner,
                n_trials=1 if args.index is not None else None,
                callbacks=[StopWhenDone(budget)],
                catch=(TrialFailed, Surplus),
            )
    except KeyboardInterrupt:  # Ctrl-C; SIGTERM raises Terminated, a KeyboardInterrupt
        interrupted = next((t for t in study.get_trials(deepcopy=False) if t.number == runner.current), None)
        again = ""
        if interrupted is not None and interrupted.state == optuna.trial.TrialState.FAIL:
            requeue(study, interrupted)
            again = f" at trial {interrupted.number}; it is queued again"
        print(f"[sweep {spec.name}] interrupted{again}: the same command resumes the sweep", file=sys.stderr)
        return 130
    fail_stale_trials(study)  # the table says how things are, also if no other worker asks again
    print_summary(spec, study, budget)
    if not work_left(study, budget) and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        log_summary_run(spec, study, url, root, str(logger.get("project") or "gen-lightning"), logger.get("entity"))
    return 1 if open_failures(study.get_trials(deepcopy=False)) else 0


class _OneLineFailures(logging.Filter):
    """Optuna logs a failed trial with the traceback of the objective's exception; ours carry the run's
    error line already (the traceback would point into the sweep runner, not the failed run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from gen_lightning.sweeps.trial import Surplus, TrialFailed

        if record.exc_info and isinstance(record.exc_info[1], (TrialFailed, Surplus)):
            record.exc_info = None
        return True


def _quiet_expected_failures() -> None:
    import optuna

    optuna.logging.get_logger("optuna")  # creates Optuna's stderr handler, where every optuna.* record passes
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_OneLineFailures())
