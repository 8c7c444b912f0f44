"""`reflexopt worker`: join optimize runs whose study lives in shared storage and run their strategy's trials.

There is no scheduler: the study in the storage is the coordination. A worker reads the run's configuration
and baseline from the study's attributes and hands the strategy the study names the same search context as
`reflexopt optimize` does (without a run folder), until the study says it is no longer running or a limit is
reached. A strategy that cannot share a study (the DSPy ones) is refused with one line. The dataset path in the
run's configuration must be readable on the worker's machine and hold the same cases: a worker whose copy
differs stops before any call (the study's data fingerprint).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .budget import Limits
from .config import OptimizeConfig
from .errors import ConfigError
from .evaluator import Evaluator
from .events import Event, EventBus, forward
from .pool import Candidate, State, from_study
from .search import Search, find_studies, worker_id
from .strategies import SearchContext, get_strategy


@dataclass(frozen=True)
class WorkerReport:
    study: str
    trials: int
    model_calls: int


async def _work_on(name: str, attrs: dict[str, Any], storage: str, on_event: Event) -> WorkerReport:
    config = OptimizeConfig.model_validate(attrs["reflexopt_config"]).model_copy(update={"storage": storage})
    strategy = get_strategy(config.strategy)
    if config.pipeline is not None:
        raise ConfigError(f"study {name!r} runs a pipeline ({config.pipeline.target}); workers do not run pipelines",
                          fix="let the optimize process run it alone (its pipeline already runs cases in parallel "
                              "worker processes; raise --concurrency)")
    if not getattr(strategy, "distributed", False):
        raise ConfigError(f"study {name!r} runs strategy {config.strategy!r}, which cannot share a study with "
                          "workers", fix="run workers only for strategies that support them (reflex); this run "
                          "finishes in its own optimize process")
    on_event("study", {"study": name, "run_id": attrs.get("run_id")})
    done = 0

    def count(kind: str, data: dict[str, Any]) -> None:
        nonlocal done
        done += kind == "trial"

    bus = EventBus([count, forward(on_event, study=name)])
    ev = Evaluator(config, str(attrs["baseline_prompt"]), on_event=bus)
    with Search(storage, name, seed=config.seed, pruning=config.pruning) as search:
        ev.check_data(search.attrs().get("data_fingerprint"))
        b = config.budget
        ev.connect(limits=Limits(trial_limit=b.trial_limit, patience=b.patience, target=b.target))
        pool = from_study(search.records(), ev.val)
        baseline = next((c for c in pool if c.id == "baseline"), None) or \
            Candidate("baseline", ev.baseline_prompts).scored({}, State.COMPLETE)
        ctx = SearchContext(ev, search, baseline, float(attrs.get("min_gain", 0.0)), emit=bus, worker=worker_id(),
                            keep_going=lambda: search.attrs().get("status") == "running")
        search.fail_stale()  # a dead worker's trial must not hold a --max-trials slot
        await strategy.search(ctx)
    return WorkerReport(name, done, ev.usage()["model_calls"])


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
            reports.append(asyncio.run(_work_on(name, attrs, storage, emit)))
        if time.monotonic() >= deadline or (seen_any and not running):
            return reports
        time.sleep(0.5)
