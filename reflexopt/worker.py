"""`reflexopt worker`: join optimize runs whose study lives in shared storage and evaluate their trials.

There is no scheduler: the study in the storage is the coordination. A worker reads the run's configuration
and baseline from the study's attributes, rebuilds the candidate pool from its trials, and runs trials with
the same Runner as `reflexopt optimize` until the study says it is no longer running (or a limit is reached).
The dataset path in the run's configuration must be readable on the worker's machine and hold the same cases:
a worker whose copy differs stops before any call (`Runner.connect` checks the study's data fingerprint).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .config import OptimizeConfig
from .errors import ConfigError
from .events import Event
from .pool import from_study, select
from .prompt import parse_prompt
from .runner import Runner
from .search import Search, find_studies


@dataclass(frozen=True)
class WorkerReport:
    study: str
    trials: int
    model_calls: int


async def _work_on(name: str, attrs: dict[str, Any], storage: str, on_event: Event) -> WorkerReport:
    config = OptimizeConfig.model_validate(attrs["reflexopt_config"]).model_copy(update={"storage": storage})
    runner = Runner(config, parse_prompt(attrs["baseline_prompt"], "baseline"), store=None, on_event=on_event)
    with Search(storage, name, seed=config.seed, pruning=config.pruning) as search:
        runner.connect(search)
        done = 0
        while True:
            attrs_now = search.attrs()
            if attrs_now.get("status") != "running":
                break
            search.fail_stale()  # a dead worker's trial must not hold a --max-trials slot
            records = search.records()
            pool = from_study(records, runner.val)
            sel = select(pool, len(runner.val), float(attrs_now.get("min_gain", 0.0)))
            if runner.stop_reason(records, sel, pool):
                break
            cand = await runner.step(pool)
            if cand is None:
                break
            done += 1
            on_event("trial", {"study": name, "candidate": cand.id, "operator": cand.operator, "state": cand.state,
                               "val": cand.val_mean, "n_val": len(cand.val)})
    return WorkerReport(name, done, runner.usage()["model_calls"])


def run_worker(storage: str, *, study: str | None = None, wait_s: float = 0.0,
               on_event: Event | None = None) -> list[WorkerReport]:
    """Work on every running reflexopt study in `storage` (or just `study`) until none is left running.

    With `wait_s`, keep polling that long for a study to appear or start running."""
    emit: Event = on_event or (lambda kind, data: None)
    reports: list[WorkerReport] = []
    deadline = time.monotonic() + wait_s
    seen_any = False
    while True:
        studies = [(n, a) for n, a in find_studies(storage) if study is None or n == study]
        if study is not None and not studies and time.monotonic() >= deadline:
            raise ConfigError(f"no reflexopt study named {study!r} in the storage",
                              fix="start the run with `reflexopt optimize ... --storage URL` first; "
                              "the study name is printed at its start")
        running = [(n, a) for n, a in studies if a.get("status") == "running"]
        for name, attrs in running:
            seen_any = True
            emit("study", {"study": name, "run_id": attrs.get("run_id")})
            reports.append(asyncio.run(_work_on(name, attrs, storage, emit)))
        if time.monotonic() >= deadline or (seen_any and not running):
            return reports
        time.sleep(0.5)
