"""One trial = one `gen-lightning fit` process in its own folder: the objective a worker gives Optuna.

Why a process and not a function call: a crash (out of memory, a NaN assertion, a segfault) takes one
trial down, never the worker; DDP launches as for any run (the parameters are command-line arguments,
which every rank parses identically); and the run is exactly what `wandb agent` would start.

Everything about trial N is in `<sweep dir>/N/`: `output.log`, `state.json` (parameters, command,
status, metrics or error: a record for people and scripts; the study is the truth) and the run's own
folder (checkpoints, config, the W&B offline run). The run finds its trial through environment
variables and reports to it through gen_lightning.callbacks.OptunaPruning; when it has ended the
worker tells the study COMPLETE (the metric from the run's summary.json), PRUNED (the callback marked
the trial) or FAIL (the exit code and the run's error line).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution

from gen_lightning.callbacks.optuna_pruning import (
    PRUNED_ATTR,
    STORAGE_ENV,
    STUDY_ENV,
    TRIAL_ENV,
)
from gen_lightning.sweeps.queue import SURPLUS_ATTR, is_surplus, retried_from
from gen_lightning.sweeps.spec import SweepSpec, expand_command, gen_lightning_args

CALLBACK = "gen_lightning.callbacks.OptunaPruning"


class TrialFailed(Exception):
    """The trial's run failed; the study records FAIL and the worker goes on."""


class Surplus(Exception):
    """A trial past the study's budget (two workers asked at once); it never runs."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (scancel, kill, a Slurm time limit): stop like Ctrl-C; the running trial is queued again."""


def raise_terminated(signum, frame):
    raise Terminated()


def suggest(trial: optuna.Trial, distributions: dict) -> dict:
    """Draw every parameter of the trial from its distribution (a re-run gets its original's values)."""
    params = {}
    for name, d in distributions.items():
        if isinstance(d, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            params[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            params[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    return params


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


def write_state(folder: Path, state: dict) -> None:
    tmp = folder / f"state.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(folder / "state.json")  # atomic: a kill never leaves half a state file


@dataclass
class TrialRunner:
    """The objective: `study.optimize(TrialRunner(...))`."""

    spec: SweepSpec
    root: Path  # the sweep folder
    storage: str  # the study's storage, as every process opens it
    seed: int
    budget: int
    extra: list[str]  # arguments after `--`, for every trial
    overrides: Callable[[Path, int], list[str]]  # (trial folder, number) -> where the run writes, its W&B name
    array_task: int | str | None = None  # --index, or SLURM_ARRAY_TASK_ID: recorded with the trial
    current: int | None = field(default=None, init=False)  # the trial running now

    def __call__(self, trial: optuna.Trial) -> float:
        self.current = trial.number
        study = trial.study
        trials = study.get_trials(deepcopy=False)
        if retried_from(trials[trial.number]) is None and is_surplus(trials, trial.number, self.budget):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise Surplus(
                f"trial {trial.number} is past the sweep's {self.budget} trials (another worker asked "
                "at the same time); not run"
            )
        if self.spec.method != "grid":
            study.sampler = self.spec.sampler(self.seed, trial.number)  # seeded per trial: see spec.py
        params = suggest(trial, self.spec.distributions)
        folder = self.root / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        command = (
            expand_command(self.spec, params)
            + self.extra
            + self.overrides(folder, trial.number)
            + [f"--trainer.callbacks+={CALLBACK}"]
        )
        trial.set_user_attr("folder", str(folder.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        if self.array_task is not None:
            trial.set_user_attr("array_task", str(self.array_task))
        print(
            f"[sweep {self.spec.name}] trial {trial.number}: " + " ".join(f"{k}={v}" for k, v in params.items()),
            flush=True,
        )
        return self._run(trial, params, command, folder)

    def _run(self, trial: optuna.Trial, params: dict, command: list[str], folder: Path) -> float:
        summary_file = folder / "summary.json"
        summary_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.setdefault("WANDB_MODE", "offline")  # --local: no server; `wandb sync` uploads later
        env["WANDB_NAME"] = f"{self.spec.name}-{trial.number}"  # for loggers whose config sets no name
        env["WANDB_RUN_GROUP"] = self.spec.name
        env["WANDB_TAGS"] = f"sweep-{self.spec.name}"[:64]
        env["GEN_LIGHTNING_SUMMARY_FILE"] = str(summary_file)
        env.update({STORAGE_ENV: self.storage, STUDY_ENV: study_name(trial), TRIAL_ENV: str(trial.number)})
        state = {
            "trial": trial.number,
            "study": study_name(trial),
            "storage": self.storage,
            "params": params,
            "command": command,
            "status": "running",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "array_task": self.array_task,
            "started": time.time(),
        }
        start = time.perf_counter()
        output: list[str] = []
        proc: subprocess.Popen | None = None
        try:  # SIGTERM raises Terminated from here on (installed by the verb)
            write_state(folder, state)
            proc = subprocess.Popen(
                [sys.executable, "-m", "gen_lightning", *gen_lightning_args(command)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                bufsize=1,
            )
            with open(folder / "output.log", "w") as log:
                for line in proc.stdout:
                    sys.stdout.write(line)
                    log.write(line)
                    output.append(line)
                    del output[:-200]  # the tail is enough to find the error
            returncode = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as Terminated
            if proc is not None:
                proc.send_signal(signal.SIGINT)  # Lightning shuts down gracefully on SIGINT
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            write_state(folder, {**state, "status": "interrupted"})
            trial.set_user_attr("error", "interrupted")
            raise KeyboardInterrupt from None
        seconds = round(time.perf_counter() - start, 1)
        trial.set_user_attr("seconds", seconds)
        state["seconds"] = seconds
        if returncode == 0 and summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            metrics = summary["metrics"]
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("run_dir", summary["run_dir"])
            state.update(metrics=metrics, run_dir=summary["run_dir"])
            pruned = latest(trial).user_attrs.get(PRUNED_ATTR)
            if pruned:
                write_state(folder, {**state, "status": "pruned", "pruned": pruned})
                raise optuna.TrialPruned(f"pruned at validation {pruned['validation']} (step {pruned['global_step']})")
            if self.spec.metric in metrics:
                write_state(folder, {**state, "status": "complete"})
                return metrics[self.spec.metric]
            error = f"the run logged no {self.spec.metric} (it logged {', '.join(sorted(metrics)) or 'nothing'})"
        elif returncode == 0:
            error = "the run wrote no summary.json: sweeps rank `fit` runs"
        else:
            error = error_line(output, returncode)
        trial.set_user_attr("error", error)
        write_state(folder, {**state, "status": "failed", "returncode": returncode, "error": error})
        raise TrialFailed(error)


def study_name(trial: optuna.Trial) -> str:
    return trial.study.study_name


def latest(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The trial as the storage holds it now (its run's process may have written to it)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
