"""The study as the work queue of many workers: how many trials, which are surplus, which run again.

Optuna hands out trials (a new one per `ask`, or a WAITING one first) but has no notion of "the sweep
is done" shared by workers: `n_trials` counts per worker, and GridSampler, once its grid is handed
out, re-runs a configuration instead of stopping a late worker. Here the budget (the grid, --count,
run_cap) is the study's:
- the first `budget` trials by number that are not re-runs are the sweep; a worker asks for a new one
  only while fewer exist, and runs WAITING (re-queued) ones first;
- two workers asking at the same instant may both get one past the budget: the one with the higher
  number is *surplus* and ends at once as FAIL with user attr `surplus` (no process, no folder);
  by numbers, never by timing, so no configuration runs twice and none is left out;
- a re-run is Optuna's RetryHeartbeatStaleTrialCallback copy (WAITING, same parameters, the original
  in `failed_trial`): for a stale trial, an interrupted one, and every failure under --retry-failed.
"""

from __future__ import annotations

import copy
import warnings

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

SURPLUS_ATTR = "surplus"


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the trial this one re-runs (None for a trial of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def reruns(trials: list[FrozenTrial]) -> dict[int, int]:
    """Number of each re-queued trial -> the number of its (latest) re-run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {n: t.number for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def is_surplus(trials: list[FrozenTrial], number: int, budget: int) -> bool:
    """Trial `number` is past the budget: `budget` trials of their own have smaller numbers."""
    return sum(1 for t in trials if t.number < number and retried_from(t) is None) >= budget


def work_left(study: optuna.Study, budget: int) -> bool:
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    return sum(1 for t in trials if retried_from(t) is None) < budget


def open_failures(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Failed trials that are part of the sweep and have not been re-queued."""
    again = reruns(trials)
    return [
        t for t in trials if t.state == TrialState.FAIL and t.number not in again and not t.user_attrs.get(SURPLUS_ATTR)
    ]


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """A WAITING copy of `trial` (same parameters); the next worker to ask runs it first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback()(study, copy.deepcopy(trial))  # it appends to the trial's lists


class StopWhenDone:
    """study.optimize callback: stop this worker once the study's budget is handed out."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not work_left(study, self.budget):
            study.stop()
