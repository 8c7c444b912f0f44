"""The Optuna study: the only module that imports optuna.

Each candidate prompt is one trial (ask/tell). Val cases are reported per case (step = case index) to the
trial in memory, which stops a candidate that shows no gain over its parent on the first cases (a minibatch
gate, as GEPA accepts its candidates) or, later, as soon as it is significantly worse than the best one (the
Wilcoxon test of Optuna's WilcoxonPruner, asked in process: no database round trip per case). The TPE sampler learns
which operators and structural settings pay off.

The study is also the run's shared state: every finished trial carries its candidate (prompt, parent, operator,
reasoning) and its per-case val scores in one user attribute, written once at `tell` (one write per trial, not
one per case and per field: that is what let several workers share a study without its commits dominating), and
the study carries the run's configuration. So any process that can reach the storage (SQLite in the run
directory, or PostgreSQL for several machines) can rebuild the candidate pool and take part; Optuna's RDB
storage is the coordination.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .pruning import AgainstBest, collapse, gate_says_stop
from .space import DEMO_KNOBS, MAX_DEMOS, suggest

__all__ = ["DEMO_KNOBS", "GRACE_S", "HEARTBEAT_S", "MAX_DEMOS", "Search", "StudyState", "Trial", "TrialRecord",
           "find_studies", "worker_id"]
HEARTBEAT_S = 10
GRACE_S = 90
PACKED = "reflexopt"  # the user attribute that holds a finished trial's candidate and per-case scores


class StudyState(str, Enum):
    """A trial's state in the study (Optuna's names; a candidate's own states are pool.State)."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    WAITING = "WAITING"

    def __str__(self) -> str:
        return str(self.value)


def worker_id() -> str:
    """This process, as recorded on the trials it runs (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: StudyState
    value: float | None
    params: dict[str, Any]
    attrs: dict[str, Any]
    steps: dict[int, float]


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # we record heartbeats ourselves (ask/tell has no heartbeat thread)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


def _fast_sqlite(engine: Any) -> None:
    """WAL with synchronous=NORMAL: a commit no longer waits for fsync (a run writes one per scored case). A
    killed process loses nothing committed; only a power cut can lose the last commits, and a resumed run
    re-asks what is missing."""
    from sqlalchemy import event

    def pragmas(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while optuna created the schema reconnect with the pragmas


def _storage(url: str) -> Any:
    optuna = _optuna()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        for attempt in range(6):
            try:
                storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                                     **kwargs)
                if url.startswith("sqlite"):
                    _fast_sqlite(storage.engine)
                return storage
            except ImportError:
                raise
            except Exception as e:  # noqa: BLE001
                # several processes creating the schema of an empty database at once race (a duplicate type
                # or table: IntegrityError or ProgrammingError); the loser retries
                if type(e).__name__ not in ("IntegrityError", "ProgrammingError") or attempt == 5:
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")
    except ImportError:
        from .errors import ConfigError

        raise ConfigError(f"no database driver for storage {url.split('://', 1)[0]}://",
                          fix='pip install "reflexopt[postgres]" for postgresql:// URLs') from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy/optuna raise many types for a bad URL or server
        from .errors import ConfigError

        where = url.split("@")[-1]
        if url.startswith("sqlite") and type(e).__name__ == "DatabaseError":  # the file is there but damaged
            path = url.split(":///", 1)[-1]
            raise ConfigError(f"{path}: the run's Optuna study cannot be read (the file is damaged)",
                              fix="restore the file; the run's logs keep its candidates and scored cases, so "
                                  "`reflexopt runs show` and `report` still work") from None
        raise ConfigError(f"cannot open storage ...@{where}: {type(e).__name__}",
                          fix="check the URL, that the server runs and that the database exists") from None


def find_studies(url: str) -> list[tuple[str, dict[str, Any]]]:
    """(study name, study attributes) of every reflexopt study in a storage. Reads the studies' attributes only:
    Optuna's study summaries also load every trial of every study (3 to 5 s for 52 finished runs of 60 trials on
    PostgreSQL, against 0.03 s), and a waiting worker asks twice a second."""
    out = []
    storage = _storage(url)
    try:
        for s in storage.get_all_studies():
            if "reflexopt_config" in s.user_attrs:
                out.append((s.study_name, dict(s.user_attrs)))
    finally:
        _close(storage)
    return out


def _close(storage: Any) -> None:
    """Close the storage's database connections (a long-lived process must not keep them until GC)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


class Trial:
    """One asked trial: its parameters, per-case reports (kept in memory until `tell`), heartbeat and the
    pruning question."""

    def __init__(self, trial: Any, storage: Any, *, best: dict[int, float] | None = None,
                 p_threshold: float = 0.1, first_check: int = 1 << 30) -> None:
        self._t = trial
        self._storage = storage
        self.number: int = trial.number
        self.params: dict[str, Any] = {}
        self._against = AgainstBest(best or {}, p_threshold=p_threshold, first_check=first_check)
        self.steps: dict[int, float] = self._against.steps  # one record of the scores so far, shared
        self._first_check = first_check  # fewer shared cases than this: never pruned
        self._parent: dict[int, float] = {}
        self._noise = 0.0
        self.pruned_by = ""  # why should_prune said yes: "collapsed", "gate" (no better than its parent) or
        # "worse than best"
        self._labels: tuple[str, ...] = ()
        self._ideals: dict[int, str | None] = {}
        self._known: set[str] = set()
        self._outputs: dict[int, str] = {}
        self.collapsed: dict[str, Any] | None = None

    def suggest(self, operator: str, *, n_train: int, n_labels: int, first: bool = False,
                around: dict[str, Any] | None = None, prior: bool = False) -> dict[str, Any]:
        """The settings of one operator, sampled by TPE (space.suggest has the search space)."""
        self.params = suggest(self._t, self.number, operator, n_train=n_train, n_labels=n_labels, first=first,
                              around=around, prior=prior)
        return self.params

    def report(self, value: float, step: int, output: str | None = None) -> None:
        self._against.report(value, step)
        if self._labels and output is not None:
            self._outputs[int(step)] = output

    def collapse_on(self, labels: Sequence[str], ideals: dict[int, str | None], known: set[str]) -> None:
        """On a label task: at the first check, stop a candidate that answers one of the `known` labels whatever
        the case (pruning.collapse): a prompt that did so was already scored on all of val, so this one's score
        is known without its calls. What it answered is kept in `collapsed`."""
        self._labels, self._ideals, self._known = tuple(labels), dict(ideals), set(known)

    def gate_on(self, parent: dict[int, float], noise: float = 0.0) -> None:
        """Screen this trial against its parent's val scores (case index -> score): when the first check is
        reached, a candidate that shows no gain over its parent on the cases scored so far is stopped there
        (after GEPA's minibatch acceptance; see should_prune), by more than a noisy judge (`noise`, the SD of one
        verdict) explains. Without a parent, or with pruning off, there is no gate."""
        self._parent, self._noise = dict(parent), noise

    def should_prune(self) -> bool:
        """Stop this trial now? The rules are pruning.py's (the gate against the parent once, then the test
        against the best); this holds the state they need, without storage access."""
        if len(self.steps) < self._first_check:
            return False
        if self._labels:
            labels, self._labels = self._labels, ()
            self.collapsed = collapse(self._outputs, self._ideals, labels)
            if self.collapsed is not None and self.collapsed["label"] in self._known:
                self.pruned_by = "collapsed"
                return True
        if self._parent:
            parent, self._parent = self._parent, {}
            if gate_says_stop(self.steps, parent, self._noise):
                self.pruned_by = "gate"
                return True
        if self._against.should_prune():
            self.pruned_by = "worse than best"
            return True
        return False

    def heartbeat(self) -> None:
        self._storage.record_heartbeat(self._t._trial_id)

    def set_attr(self, key: str, value: Any) -> None:
        self._t.set_user_attr(key, value)


class Search:
    def __init__(self, storage: str, study_name: str, *, seed: int = 0, p_threshold: float = 0.1,
                 n_startup_steps: int = 15, pruning: bool = True) -> None:
        # n_startup_steps 15: below that, scipy's Wilcoxon test on tied 0/1 scores switches to an exact
        # permutation method that takes up to a second per check; from 15 cases on it is ~1 ms.
        optuna = _optuna()
        self._optuna = optuna
        self.storage = _storage(storage)
        self._p = p_threshold
        self._first_check = n_startup_steps if pruning else 1 << 30
        self._finished: dict[int, TrialRecord] = {}
        self._stale_checked = -math.inf
        # independent TPE, as before Optuna 5 made multivariate the default: the operators' knobs are conditional
        # (and the baseline trial has none), so the intersection search space of multivariate TPE is always empty
        # and it fell back to independent sampling anyway, after recomputing that space each trial (~11 ms)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=False)
        # pruning is decided in process (Trial.should_prune); Optuna's pruner would read the storage per case
        self.study = optuna.create_study(storage=self.storage, study_name=study_name, direction="maximize",
                                         sampler=sampler, pruner=optuna.pruners.NopPruner(), load_if_exists=True)

    def against(self, best: dict[int, float]) -> AgainstBest | None:
        """A pruning hook for a candidate scored outside a trial, with this run's pruning settings (None with
        pruning off): stopped once significantly worse than `best` (case index -> score)."""
        if self._first_check >= 1 << 30:
            return None
        return AgainstBest(best, p_threshold=self._p, first_check=self._first_check)

    @property
    def name(self) -> str:
        return str(self.study.study_name)

    def close(self) -> None:
        _close(self.storage)

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    def attrs(self) -> dict[str, Any]:
        """The study's attributes as stored now (one read; other processes may have changed them)."""
        return dict(self.study.user_attrs)

    def fail_stale(self, *, immediately: bool = False) -> int:
        """Fail trials left RUNNING by a dead process: at once (a single-process run being resumed), or once
        their heartbeat is older than the grace period (other workers may still be alive). The second kind is
        looked for at most once per heartbeat interval: a trial is stale only after GRACE_S anyway, and the look
        takes several queries, which every worker made before each of its trials."""
        from optuna.trial import TrialState

        if not immediately:
            now = time.monotonic()
            if now - self._stale_checked < HEARTBEAT_S:
                return 0
            self._stale_checked = now
            running = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            if not running:
                return 0
            self._optuna.storages.fail_stale_trials(self.study)  # returns None: count what it failed
            failed = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
            return len(running & failed)
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
        return n

    def ask(self, best: dict[int, float] | None = None) -> Trial:
        """A new trial. `best`: the per-case val scores (by case index) of the best candidate so far, which the
        trial may be pruned against; without it the trial is never pruned."""
        return Trial(self.study.ask(), self.storage, best=best, p_threshold=self._p, first_check=self._first_check)

    def tell(self, trial: Trial, value: float | None, *, pruned: bool = False, failed: bool = False,
             attrs: dict[str, Any] | None = None) -> None:
        """Finish a trial: its attributes and per-case scores in one write, then its state. A pruned trial also
        gets one intermediate value (cases scored, mean so far), which TPE ranks pruned trials by."""
        from optuna.trial import TrialState

        if attrs is not None:
            trial.set_attr(PACKED, {**attrs, "steps": {str(k): v for k, v in trial.steps.items()}})
        if failed or value is None:
            self.study.tell(trial._t, state=TrialState.FAIL)
        elif pruned:
            if trial.steps:
                trial._t.report(sum(trial.steps.values()) / len(trial.steps), len(trial.steps))
            self.study.tell(trial._t, state=TrialState.PRUNED)
        else:
            self.study.tell(trial._t, value)

    def add_baseline(self, value: float, steps: dict[int, float], attrs: dict[str, Any]) -> None:
        """Record the already-evaluated starting prompt (no parameters) with its per-case values."""
        trial = self._optuna.trial.create_trial(params={}, distributions={}, value=value,
                                                intermediate_values=steps, user_attrs=attrs)
        self.study.add_trial(trial)

    def records(self) -> list[TrialRecord]:
        """Every trial, in order. A finished trial never changes, so its record is built once and reused (the
        pool rebuilt from the records each trial then costs nothing for the trials it has seen)."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            hit = self._finished.get(t.number)
            if hit is None or hit.state != t.state.name:
                attrs = dict(t.user_attrs)
                packed = attrs.pop(PACKED, None)
                steps = dict(t.intermediate_values)
                if isinstance(packed, dict):
                    steps = {int(k): float(v) for k, v in packed.pop("steps", {}).items()}
                    attrs.update(packed)
                hit = TrialRecord(t.number, StudyState(t.state.name), t.value, dict(t.params), attrs, steps)
                if t.state.is_finished():
                    self._finished[t.number] = hit
            out.append(hit)
        return out
