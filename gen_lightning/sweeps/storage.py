"""Where a sweep's study lives, and the heartbeat that turns a killed worker's trial into a failed one.

`--storage` takes
  (nothing)     SQLite `<sweep dir>/study.db`: nothing to start, fine for a few workers on one machine
  journal       Optuna's journal file `<sweep dir>/study.journal`: a shared filesystem is all many nodes
                need (what SLURM clusters have; no database server, no fcntl locks: NFS-safe)
  PATH          that journal file
  URL           any database URL Optuna accepts (sqlite:///..., postgresql://..., mysql://...)

Every worker records a heartbeat while its trial runs; a worker that asks for a trial first marks
RUNNING trials whose heartbeat is older than the grace period as FAIL (Optuna's fail_stale_trials).
Optuna implements the heartbeat for database storages only: HeartbeatJournalStorage adds the three
methods for the journal file (the timestamp is a trial system attribute: one journal line per beat;
the nodes' clocks must agree to within the grace period, as NTP keeps them).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import (
    BaseHeartbeat,  # the interface RDBStorage implements; not re-exported
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from gen_lightning.errors import UserError

SPEC_ATTR = "gen_lightning.sweep"  # study user attr: the sweep file's fingerprint
HEARTBEAT_ATTR = "heartbeat"  # trial system attr of HeartbeatJournalStorage
GRACE_FACTOR = 3  # a trial is stale after 3 missed heartbeats (Optuna's own default is 2)


def storage_url(storage: str | None, folder: Path) -> str:
    """The one string every worker and trial process opens: a database URL or a journal file's absolute path."""
    if storage is None:
        return f"sqlite:///{(folder / 'study.db').resolve()}"
    if storage == "journal":
        return str((folder / "study.journal").resolve())
    if "://" in storage:
        return storage
    return str(Path(storage).resolve())


def is_in(url: str, folder: Path) -> bool:
    """Whether the storage is a file inside the sweep folder (then the folder is created for it)."""
    path = Path(url.removeprefix("sqlite:///"))
    return "://" not in url.removeprefix("sqlite:///") and path.parent == folder.resolve()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage, with the heartbeat Optuna gives database storages only."""

    def __init__(self, path: str, heartbeat_interval: int | None = None) -> None:
        super().__init__(JournalFileBackend(path))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = None if heartbeat_interval is None else GRACE_FACTOR * heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker already failed the trial: its tell will say so

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        # A re-queued trial inherits its original's system attrs, the last heartbeat too: count from its start.
        return [
            t._trial_id
            for t in running
            if now - max(t.system_attrs.get(HEARTBEAT_ATTR, 0.0), t.datetime_start.timestamp()) > self.grace_period
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return None  # a stale trial stays FAIL; `--retry-failed` re-queues it


def open_storage(url: str, heartbeat: int | None = None):
    """The Optuna storage behind `url` (see storage_url), with a heartbeat every `heartbeat` s if given."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        try:
            if "://" not in url:
                if not Path(url).parent.is_dir():
                    raise FileNotFoundError(f"folder {Path(url).parent} does not exist")
                return HeartbeatJournalStorage(url, heartbeat)
            grace = None if heartbeat is None else GRACE_FACTOR * heartbeat
            return RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace)
        except Exception as err:  # noqa: BLE001 - any reason a storage cannot be opened is the user's to fix
            cause = err.__cause__ if isinstance(err, ImportError) and err.__cause__ else err  # the missing driver
            reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            raise UserError(
                f"cannot open the study storage {url!r} ({reason[:300]}); give --storage a database URL "
                "Optuna accepts (sqlite:///path/study.db, postgresql://...), `journal`, or the path "
                "of a journal file in an existing, writable folder"
            ) from None


@contextmanager
def _one_at_a_time(url: str):
    """Serialise the creation of an SQLite study file: two workers creating Optuna's tables at once fail
    (measured: "table study_directions already exists", "UNIQUE constraint failed: alembic_version")."""
    if not url.startswith("sqlite:///"):
        yield
        return
    folder = Path(url.removeprefix("sqlite:///")).parent
    if not folder.is_dir():  # open_storage says so in one line
        yield
        return
    fd = os.open(folder, os.O_RDONLY)  # a lock on the folder: no lock file left beside the database
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # SQLite itself needs working POSIX locks on this filesystem
        yield
    finally:
        os.close(fd)  # releases the lock


def open_study(spec, url: str, heartbeat: int | None, seed: int) -> optuna.Study:
    """Create the sweep's study in the storage, or join it; a study made from another sweep file is refused."""
    with _one_at_a_time(url):
        storage = open_storage(url, heartbeat)
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=spec.name,
                direction=spec.goal,
                sampler=spec.sampler(seed),
                pruner=spec.pruner(),
                load_if_exists=True,
            )
        except Exception as err:  # noqa: BLE001 - e.g. a database without the rights to create tables
            raise UserError(
                f"cannot open study {spec.name!r} in {url!r} ({str(err).splitlines()[0][:300]}); check the storage"
            ) from None
    fingerprint = spec.fingerprint()
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, fingerprint)
    elif stored != fingerprint:
        changed = sorted(k for k in fingerprint if fingerprint[k] != stored.get(k))
        raise UserError(
            f"study {spec.name!r} in {url} was made from another version of {spec.path} ({', '.join(changed)} "
            f"differ: {json.dumps({k: stored.get(k) for k in changed})}); start a new sweep with --dir NEW_DIR "
            "(or --storage elsewhere)"
        )
    return study


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own check (study.optimize runs it before each trial), also where a worker starts and ends."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def study_for_trial_process(url: str, study_name: str):
    """The study as a trial's own process sees it: no heartbeat (its worker beats), the sweep's pruner."""
    from gen_lightning.sweeps.spec import pruner_for

    study = optuna.load_study(
        study_name=study_name, storage=open_storage(url), sampler=optuna.samplers.RandomSampler()
    )  # never asked: the worker drew the parameters
    fingerprint = study.user_attrs[SPEC_ATTR]
    study.pruner = pruner_for(fingerprint["early_terminate"])
    return study, fingerprint
