"""A W&B sweep file read as an Optuna study: distributions, sampler, pruner, budget and trial command.

The file is the one `wandb sweep FILE` takes (method, metric, parameters, early_terminate, command,
run_cap), so one file runs on the W&B server and here. Here Optuna searches:
  grid    GridSampler over the `values` lists: every combination once
  random  RandomSampler
  bayes   TPESampler (multivariate; constant liar, so that parallel workers spread out)
A parameter maps onto an Optuna distribution by W&B's own table (wandb.sdk.sweeps.scheduler.optuna),
except where that table changes the meaning without a word: `probabilities` (Optuna's categorical is
uniform) and q_log_uniform_values with q != 1 or min < 1 (Optuna's log scale has no step) are refused
here, and `log_uniform` (bounds given as natural logs) is the log-uniform over [e^min, e^max] it is.
W&B distributions with no Optuna counterpart (normal, beta, inv_log_uniform, ...) are refused by name.

`early_terminate: {type: hyperband, min_iter | max_iter, eta, s}` -> HyperbandPruner. An iteration
is one validation of the trial: W&B counts the logged values of the metric, which is the same thing.

random and bayes are seeded per trial, with (--seed, trial number): one worker draws the same
configurations on every run, and workers sharing a study never draw alike (Optuna's advice for
parallel workers is a different seed each; one per trial number is that, and reproducible).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gen_lightning.cli_args import check_yaml_file
from gen_lightning.errors import UserError

METHODS = ("grid", "random", "bayes")
# Every distribution a W&B sweep file may name (W&B's sweep config schema).
WANDB_DISTRIBUTIONS = (
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
)
# The top-level keys of a W&B sweep config: anything else would make `wandb sweep FILE` refuse the file.
WANDB_KEYS = (
    "program",
    "method",
    "parameters",
    "metric",
    "early_terminate",
    "name",
    "description",
    "command",
    "project",
    "entity",
    "run_cap",
    "job",
    "image_uri",
)


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    method: str
    metric: str
    goal: str
    parameters: dict[str, dict]  # as written in the file
    distributions: dict[str, Any]  # name -> optuna.distributions.BaseDistribution
    command: list[str]
    program: str | None = None
    run_cap: int | None = None
    early_terminate: dict | None = None

    # -- the search ---------------------------------------------------------------------------------
    def grid(self) -> dict[str, list]:
        """The grid's values per parameter, in file order (the parameters are all categorical here)."""
        return {name: list(d.choices) for name, d in self.distributions.items()}

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def budget(self, count: int | None) -> int:
        """How many trials the study runs in all (shared by every worker): the grid, capped by --count / run_cap."""
        caps = [c for c in (count, self.run_cap) if c is not None]
        if self.method == "grid":
            return min([self.grid_size(), *caps])
        if not caps:
            raise UserError(
                f"{self.path}: a {self.method} sweep never ends by itself; give --count N (or run_cap: N in the file)"
            )
        return min(caps)

    def sampler(self, seed: int, trial_number: int = 0):
        """The sampler that draws trial `trial_number` (grid: one sampler for all, seeded by --seed)."""
        import optuna

        if self.method == "grid":
            return optuna.samplers.GridSampler(self.grid(), seed=seed)
        trial_seed = random.Random(f"{seed}:{trial_number}").getrandbits(32)
        if self.method == "random":
            return optuna.samplers.RandomSampler(seed=trial_seed)
        return optuna.samplers.TPESampler(seed=trial_seed, multivariate=True, constant_liar=True)

    def pruner(self):
        return pruner_for(self.early_terminate)

    def fingerprint(self) -> dict:
        """What makes two sweep files the same study (kept in the study: a changed file is refused)."""
        return json.loads(
            json.dumps(
                {
                    "method": self.method,
                    "metric": self.metric,
                    "goal": self.goal,
                    "parameters": self.parameters,
                    "early_terminate": self.early_terminate,
                },
                default=str,
            )
        )

    def covering_configurations(self) -> list[dict[str, Any]]:
        """A few configurations that give every parameter each of its values (or both of its bounds).

        The CLI parser checks each key and value on its own (cross-key checks belong to the classes'
        __init__, which parsing does not run), so parsing these finds every mistake a full grid would.
        """
        options = {
            name: list(d.choices) if hasattr(d, "choices") else [d.low, d.high]
            for name, d in self.distributions.items()
        }
        n = max(len(values) for values in options.values())
        return [{name: values[i % len(values)] for name, values in options.items()} for i in range(n)]

    def grid_configurations(self) -> list[dict[str, Any]]:
        """Every combination of a grid, in file order (the last parameter varies fastest)."""
        grid = self.grid()
        return [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} not found; give the path of a W&B sweep YAML (e.g. configs/sweeps/*.yaml)")
    check_yaml_file(path, option="sweep file")  # the line of a syntax error, a key given twice
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with method, metric, parameters and command; see docs/sweeps.md")
    unknown = [k for k in raw if k not in WANDB_KEYS]
    if unknown:
        raise UserError(
            f"{path}: {', '.join(map(str, unknown))} is not a W&B sweep key (`wandb sweep` would refuse "
            f"the file); use {', '.join(WANDB_KEYS)}"
        )
    method = raw.get("method")
    if method not in METHODS:
        raise UserError(f"{path}: unknown method {method!r}; use one of {', '.join(METHODS)}")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict) or not metric.get("name"):
        raise UserError(
            f"{path}: no `metric: {{name: ..., goal: ...}}`; the study needs the metric it optimizes, "
            "e.g. metric: {name: val/elbo, goal: maximize}"
        )
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        raise UserError(f"{path}: metric.goal must be minimize or maximize, got {goal!r}")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise UserError(f"{path}: no `parameters:`; add e.g. `model.lr: {{values: [1e-3, 3e-4]}}`")
    distributions = {str(name): to_distribution(f"{path}: parameter {name}", p) for name, p in parameters.items()}
    if method == "grid":
        ranged = [name for name, d in distributions.items() if not hasattr(d, "choices")]
        if ranged:
            raise UserError(
                f"{path}: parameter {ranged[0]}: a grid needs `values` (or `value`) for every parameter; "
                "list them or use method: random or bayes"
            )
    command = raw.get("command")
    if not isinstance(command, list) or "${args}" not in [str(c) for c in command]:
        raise UserError(
            f"{path}: `command:` must be a list ending in ${{args}}, e.g. "
            "[${env}, gen-lightning, fit, --config, configs/vae/mlp_digits.yaml, ${args}]"
        )
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise UserError(f"{path}: run_cap must be a positive integer, got {run_cap!r}")
    early_terminate = raw.get("early_terminate")
    pruner_for(early_terminate, where=f"{path}: early_terminate")  # refuse a bad one now, not in a trial
    return SweepSpec(
        path=path,
        name=str(raw.get("name") or path.stem),
        method=method,
        metric=str(metric["name"]),
        goal=goal,
        parameters={str(k): v for k, v in parameters.items()},
        distributions=distributions,
        command=[str(c) for c in command],
        program=raw.get("program"),
        run_cap=run_cap,
        early_terminate=early_terminate,
    )


def to_distribution(where: str, p: Any):
    """One W&B parameter -> its Optuna distribution (UserError for one without an equivalent)."""
    import optuna
    from wandb.sdk.sweeps.scheduler.optuna import sweep_parameter_to_distribution

    if not isinstance(p, dict):
        raise UserError(f"{where}: expected a mapping such as {{values: [...]}} or {{value: x}}, got {p!r}")
    if "parameters" in p:
        raise UserError(f"{where}: nested parameters are not supported; write dotted names such as model.lr")
    if "values" in p and (not isinstance(p["values"], list) or not p["values"]):
        raise UserError(f"{where}: `values` must be a non-empty list, e.g. values: [1.0e-3, 3.0e-4]")
    if "probabilities" in p:
        raise UserError(
            f"{where}: `probabilities` has no Optuna equivalent (its categorical choices are "
            "equally likely); drop them, or repeat a value in `values` to weight it"
        )
    distribution = p.get("distribution")
    if distribution is not None and distribution not in WANDB_DISTRIBUTIONS:
        raise UserError(
            f"{where}: distribution {distribution!r} is not a W&B distribution; use one of "
            f"{', '.join(WANDB_DISTRIBUTIONS)}"
        )
    check_bounds(where, p)
    try:
        if distribution == "log_uniform":  # W&B: exp(uniform(min, max)), i.e. log-uniform over [e^min, e^max]
            return optuna.distributions.FloatDistribution(math.exp(p["min"]), math.exp(p["max"]), log=True)
        if distribution == "q_log_uniform_values" and (p.get("q", 1) != 1 or p["min"] < 1):
            raise UserError(
                f"{where}: q_log_uniform_values with q={p.get('q', 1)}, min={p['min']} has no Optuna "
                "equivalent (Optuna's log scale takes no step but 1, from 1 up); use "
                "log_uniform_values, or q: 1 with min >= 1 (integers)"
            )
        return sweep_parameter_to_distribution(p)
    except KeyError as err:
        raise UserError(f"{where}: distribution {distribution or 'uniform'} needs {err.args[0]}") from None
    except ValueError as err:
        message = str(err)
        if "no optuna equivalent" in message:
            raise UserError(
                f"{where}: distribution {distribution!r} has no Optuna equivalent; use uniform, "
                "int_uniform, q_uniform, log_uniform_values, q_log_uniform_values or values"
            ) from None
        raise UserError(f"{where}: {message.splitlines()[0]}") from None


# Distributions over a log scale of the values themselves: their bounds must be > 0 (log_uniform's are
# natural logs, any number).
_LOG_VALUES = ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values")


def check_bounds(where: str, p: dict) -> None:
    """min/max in the user's words (Optuna's would be "`low <= high` must hold"): numbers, min <= max, and > 0 on
    a log scale of the values."""
    bounds = {k: p[k] for k in ("min", "max") if k in p}
    for key, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = (
                f"; YAML reads {value} as text, write it with a decimal point (e.g. 1.0e-4)"
                if isinstance(value, str) and "e" in value.lower()
                else ""
            )
            raise UserError(f"{where}: {key} must be a number, got {value!r}{hint}")
    if len(bounds) == 2 and bounds["min"] > bounds["max"]:
        raise UserError(f"{where}: min {bounds['min']} is greater than max {bounds['max']}; swap them")
    if p.get("distribution") in _LOG_VALUES:
        low = [f"{k} {v}" for k, v in bounds.items() if v <= 0]
        if low:
            raise UserError(
                f"{where}: {p['distribution']} needs bounds > 0 (a log scale), got {', '.join(low)}; "
                f"give min > 0, e.g. 1.0e-5, or use distribution: uniform"
            )


def pruner_for(early_terminate: dict | None, where: str = "early_terminate"):
    """W&B's `early_terminate` -> an Optuna pruner (NopPruner without one)."""
    import optuna

    if early_terminate is None:
        return optuna.pruners.NopPruner()
    if not isinstance(early_terminate, dict) or early_terminate.get("type") != "hyperband":
        kind = early_terminate.get("type") if isinstance(early_terminate, dict) else early_terminate
        raise UserError(f"{where}: type {kind!r} is not supported; use type: hyperband (with min_iter, eta)")
    unknown = sorted(set(early_terminate) - {"type", "min_iter", "max_iter", "eta", "s"})
    if unknown:
        raise UserError(f"{where}: {', '.join(unknown)} has no Optuna equivalent; use min_iter or max_iter, eta and s")
    eta = early_terminate.get("eta", 3)
    min_iter, max_iter, s = (early_terminate.get(k) for k in ("min_iter", "max_iter", "s"))
    for key, value, low in (("eta", eta, 2), ("min_iter", min_iter, 1), ("max_iter", max_iter, 1), ("s", s, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise UserError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    if (min_iter is None) == (max_iter is None):
        raise UserError(f"{where}: give min_iter (first bracket) or max_iter with s (as W&B's hyperband)")
    if max_iter is not None:
        if s is None:
            raise UserError(f"{where}: max_iter needs s, the number of brackets (as in W&B)")
        # W&B's brackets are max_iter / eta^k for k = 1..s: the lowest is Optuna's min_resource.
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, max_iter // eta**s), max_resource=max_iter, reduction_factor=eta
        )
    if s is not None:
        raise UserError(f"{where}: s goes with max_iter; with min_iter the brackets follow from the trials' length")
    return optuna.pruners.HyperbandPruner(min_resource=min_iter, max_resource="auto", reduction_factor=eta)


# -- the command a trial runs ---------------------------------------------------------------------------
def expand_command(spec: SweepSpec, params: dict[str, Any]) -> list[str]:
    """The command `wandb agent` would run for these parameters, by wandb's own macro expansion."""
    from wandb.sdk.launch.sweeps.utils import (
        create_sweep_command,
        create_sweep_command_args,
    )

    variables = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    variables["env"] = ["/usr/bin/env"]
    variables["interpreter"] = ["python"]
    variables["program"] = [spec.program] if spec.program else []
    command: list[str] = []
    for chunk in create_sweep_command(list(spec.command)):
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            command += [str(v) for v in variables.get(chunk[2:-1]) or []]
        else:
            command.append(chunk)
    return command


def gen_lightning_args(command: list[str]) -> list[str] | None:
    """The arguments after `gen-lightning` in a command (None when the command runs something else)."""
    for i, word in enumerate(command):
        if Path(word).name == "gen-lightning":
            return command[i + 1 :]
    return None
