"""A W&B sweep file, read without a W&B server: its configurations (grid, random) and their commands.

The file is the one `wandb sweep FILE` takes (method, metric, parameters, command). The W&B server
chooses configurations itself; here they are generated the same way for `grid` and `random`:
  grid    every combination of the `values` lists, in file order (the last parameter varies fastest)
  random  configuration i is drawn from a generator seeded with (seed, i): the same index always
          gives the same configuration, so a SLURM array task or a resumed sweep needs no shared state
`bayes` needs the server's model of past runs: not done here.

W&B's `sweeps` engine (wandb[sweeps]) is not used: it pins numpy<2, which this environment is past.
The command line, however, is expanded by wandb's own agent code (`${args}`, `${env}`, `${envvar:X}`...),
so `--local` runs exactly what `wandb agent` would.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from gen_lightning.errors import UserError

LOCAL_METHODS = ("grid", "random")
DISTRIBUTIONS = (
    "constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
    "q_log_uniform_values", "normal", "log_normal",
)


@dataclass
class SweepSpec:
    path: Path
    method: str
    parameters: dict[str, dict]
    command: list[str]
    metric: Optional[str] = None
    goal: str = "minimize"
    run_cap: Optional[int] = None
    raw: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.raw.get("name") or self.path.stem

    def grid_size(self) -> int:
        return math.prod(len(values_of(p)) for p in self.parameters.values())

    def configuration(self, index: int, seed: int = 0) -> dict[str, Any]:
        """The parameters of configuration `index` (0-based)."""
        if self.method == "grid":
            size = self.grid_size()
            if not 0 <= index < size:
                raise UserError(f"{self.path}: configuration index {index} is out of range; the grid has {size} (0..{size - 1})")
            lists = [values_of(p) for p in self.parameters.values()]
            combination = next(itertools.islice(itertools.product(*lists), index, None))
            return dict(zip(self.parameters, combination))
        if index < 0:
            raise UserError(f"{self.path}: configuration index must be >= 0, got {index}")
        rng = random.Random(f"{seed}:{index}")
        return {name: draw(name, p, rng) for name, p in self.parameters.items()}

    def size(self, count: Optional[int]) -> int:
        """How many configurations a full local sweep runs: the grid, capped by --count / run_cap."""
        caps = [c for c in (count, self.run_cap) if c is not None]
        if self.method == "grid":
            return min([self.grid_size(), *caps])
        if not caps:
            raise UserError(f"{self.path}: a random sweep never ends by itself; give --count N (or run_cap: N in the file)")
        return min(caps)


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} not found; give the path of a W&B sweep YAML (e.g. configs/sweeps/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with method, parameters and command; see docs/wandb.md")
    method = raw.get("method")
    if method not in LOCAL_METHODS:
        hint = "bayes needs the W&B server: `wandb sweep FILE` then `wandb agent ID`" if method == "bayes" else \
            "set method: grid or random"
        raise UserError(f"{path}: method {method!r} cannot run with --local (grid and random can); {hint}")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise UserError(f"{path}: no `parameters:`; add e.g. `model.lr: {{values: [1e-3, 3e-4]}}`")
    checked = {str(name): check_parameter(path, method, str(name), p) for name, p in parameters.items()}
    command = raw.get("command")
    if not isinstance(command, list) or "${args}" not in [str(c) for c in command]:
        raise UserError(
            f"{path}: `command:` must be a list ending in ${{args}}, e.g. "
            "[${env}, gen-lightning, fit, --config, configs/vae/mlp_digits.yaml, ${args}]"
        )
    metric = raw.get("metric") or {}
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        raise UserError(f"{path}: metric.goal must be minimize or maximize, got {goal!r}")
    run_cap = raw.get("run_cap")
    return SweepSpec(path, method, checked, [str(c) for c in command], metric.get("name"), goal, run_cap, raw)


def check_parameter(path: Path, method: str, name: str, p: Any) -> dict:
    where = f"{path}: parameter {name}"
    if not isinstance(p, dict):
        raise UserError(f"{where}: expected a mapping such as {{values: [...]}} or {{value: x}}, got {p!r}")
    if "parameters" in p:
        raise UserError(f"{where}: nested parameters are not supported; write dotted names such as model.lr")
    if "value" in p or "values" in p:
        if "values" in p and (not isinstance(p["values"], list) or not p["values"]):
            raise UserError(f"{where}: `values` must be a non-empty list")
        return p
    if method == "grid":
        raise UserError(f"{where}: a grid needs `values` (or `value`) for every parameter; list them or use method: random")
    distribution = p.get("distribution") or (
        "int_uniform" if isinstance(p.get("min"), int) and isinstance(p.get("max"), int) else "uniform"
    )
    if distribution not in DISTRIBUTIONS:
        raise UserError(f"{where}: distribution {distribution!r} is not supported here; use one of {', '.join(DISTRIBUTIONS)}")
    needs = ("mu", "sigma") if distribution in ("normal", "log_normal") else ("min", "max")
    if distribution in ("normal", "log_normal"):
        p = {"mu": 0.0, "sigma": 1.0, **p}
    missing = [k for k in needs if k not in p]
    if missing:
        raise UserError(f"{where}: distribution {distribution} needs {' and '.join(missing)}")
    if distribution.startswith("q_") and "q" not in p:
        p = {**p, "q": 1.0}
    return {**p, "distribution": distribution}


def values_of(p: dict) -> list:
    return p["values"] if "values" in p else [p["value"]]


def quantize(x: float, q: float) -> float:
    return round(x / q) * q


def draw(name: str, p: dict, rng: random.Random) -> Any:
    """One value of parameter `p`, with W&B's meaning of each distribution."""
    if "value" in p:
        return p["value"]
    if "values" in p:
        return rng.choices(p["values"], weights=p.get("probabilities"))[0]
    d, lo, hi = p["distribution"], p.get("min"), p.get("max")
    if d == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if d == "uniform":
        return rng.uniform(lo, hi)
    if d == "q_uniform":
        return quantize(rng.uniform(lo, hi), p["q"])
    if d == "log_uniform":  # min/max are natural logs of the bounds
        return math.exp(rng.uniform(lo, hi))
    if d == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if d == "q_log_uniform_values":
        return quantize(math.exp(rng.uniform(math.log(lo), math.log(hi))), p["q"])
    if d == "normal":
        return rng.gauss(p["mu"], p["sigma"])
    if d == "log_normal":
        return math.exp(rng.gauss(p["mu"], p["sigma"]))
    raise UserError(f"parameter {name}: distribution {d!r} is not supported here")


def expand_command(spec: SweepSpec, params: dict[str, Any]) -> list[str]:
    """The command `wandb agent` would run for these parameters, by wandb's own macro expansion."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    variables = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    variables["env"] = ["/usr/bin/env"]
    variables["interpreter"] = ["python"]
    variables["program"] = [spec.raw["program"]] if spec.raw.get("program") else []
    command: list[str] = []
    for chunk in create_sweep_command(list(spec.command)):
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            command += [str(v) for v in variables.get(chunk[2:-1]) or []]
        else:
            command.append(chunk)
    return command


def gen_lightning_args(command: list[str]) -> Optional[list[str]]:
    """The arguments after `gen-lightning` in a command (None when the command runs something else)."""
    for i, word in enumerate(command):
        if Path(word).name == "gen-lightning":
            return command[i + 1:]
    return None
