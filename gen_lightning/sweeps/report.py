"""The end of a sweep: a table ranking the study's trials, the best one, and the same table in W&B.

Optuna holds every number (`optuna.load_study(...).trials_dataframe()` gives them too); what it does
not have is the side-by-side view of a sweep: trials ranked by the metric, their parameters, how far a
pruned one got, why a failed one failed, and in W&B a `<sweep>-summary` run in the sweep's group with
that table (`sweep/trials`) and the best trial in its summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gen_lightning.sweeps.queue import SURPLUS_ATTR, reruns, retried_from
from gen_lightning.sweeps.spec import SweepSpec

ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3, TrialState.FAIL: 4}


def ranked(spec: SweepSpec, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials best first, then pruned ones (by their last value), running, waiting, failed."""
    sign = -1 if spec.goal == "maximize" else 1
    shown = [t for t in trials if not t.user_attrs.get(SURPLUS_ATTR)]
    return sorted(shown, key=lambda t: (ORDER[t.state], sign * t.value if t.value is not None else 0.0, t.number))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_state(trial: FrozenTrial, again: dict[int, int]) -> str:
    if trial.state == TrialState.FAIL:
        error = trial.user_attrs.get("error") or "no heartbeat from its worker: killed?"
        rerun = f" → re-run as {again[trial.number]}" if trial.number in again else ""
        return f"FAILED: {error}{rerun}"
    text = {
        TrialState.PRUNED: f"pruned @ {len(trial.intermediate_values)}",
        TrialState.RUNNING: f"running on {trial.user_attrs.get('host', '?')}",
    }.get(trial.state, trial.state.name.lower())
    retry = retried_from(trial)
    return f"{text} (re-run of {retry})" if retry is not None else text


def rows(spec: SweepSpec, study: optuna.Study) -> list[dict[str, Any]]:
    trials = study.get_trials(deepcopy=False)
    again = reruns(trials)
    best = best_trial(study)
    table = []
    for rank, t in enumerate(ranked(spec, trials), 1):
        table.append(
            {
                "rank": rank,
                "trial": t.number,
                **{name: t.params.get(name) for name in spec.parameters},
                spec.metric: t.value,
                "status": t.state.name.lower(),
                "state": describe_state(t, again),
                "validations": len(t.intermediate_values),
                "seconds": t.user_attrs.get("seconds"),
                "best": best is not None and t.number == best.number,
            }
        )
    return table


def print_summary(spec: SweepSpec, study: optuna.Study, budget: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table_rows = rows(spec, study)
    arrow = "↑" if spec.goal == "maximize" else "↓"
    table = Table(title=f"sweep {spec.name} ({spec.method}): {len(table_rows)} trials of {budget}")
    for column in ("rank", "trial", *spec.parameters):
        table.add_column(column, justify="right")
    table.add_column(f"{spec.metric} {arrow}", justify="right")
    table.add_column("state")
    table.add_column("time", justify="right")
    for row in table_rows:
        red = row["state"].startswith("FAILED")
        table.add_row(
            str(row["rank"]),
            str(row["trial"]),
            *[format_value(row[name]) for name in spec.parameters],
            (format_value(row[spec.metric]) if row[spec.metric] is not None else "-") + (" ★" if row["best"] else ""),
            f"[red]{row['state']}[/red]" if red else row["state"],
            f"{row['seconds']:.0f}s" if row["seconds"] is not None else "-",
        )
    # A file or pipe gets the full width: the table is the result, it must not be cut.
    Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False).print(table)
    best = best_trial(study)
    if best is not None:
        print(f"best: trial {best.number} {spec.metric}={best.value!r} {json.dumps(best.params)}", flush=True)


def log_summary_run(
    spec: SweepSpec, study: optuna.Study, storage: str, folder: Path, project: str, entity: str | None
) -> Path | None:
    """The ranked table and the best trial as a W&B run `<sweep>-summary` in the sweep's group."""
    mode = os.environ.get("WANDB_MODE", "offline").lower()  # as the trials: offline unless told otherwise
    if mode == "disabled":
        return None
    import wandb

    table_rows = rows(spec, study)
    columns = ["rank", "trial", *spec.parameters, spec.metric, "state", "validations", "seconds"]
    # One summary run per study, resumed by each later call: its id is derived from storage + study.
    key = hashlib.sha1(f"{storage}#{study.study_name}".encode()).hexdigest()[:8]
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", spec.name[:40]) + f"-summary-{key}"  # the characters W&B ids take
    run = wandb.init(
        project=project,
        entity=entity,
        group=spec.name,
        job_type="sweep-summary",
        name=f"{spec.name}-summary",
        id=run_id,
        resume="allow",
        dir=str(folder),
        mode="offline" if mode in ("offline", "dryrun") else mode,
        config={"sweep": spec.fingerprint(), "study": study.study_name, "storage": storage},
        settings=wandb.Settings(silent=True),
    )
    try:
        run.log({"sweep/trials": wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in table_rows])})
        best = best_trial(study)
        run.summary.update(
            {
                f"trials/{status}": sum(1 for r in table_rows if r["status"] == status)
                for status in ("complete", "pruned", "fail")
            }
        )
        if best is not None:
            run.summary.update(
                {
                    "best/trial": best.number,
                    f"best/{spec.metric}": best.value,
                    **{f"best/{k}": v for k, v in best.params.items()},
                }
            )
        return Path(run.dir).parent
    finally:
        run.finish()
