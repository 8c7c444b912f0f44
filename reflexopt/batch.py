"""Batch re-optimization: many prompt/model jobs from a YAML file, warm-started from their previous best.

    defaults:                    # optional, merged into every job
      metric: contains
      budget: {max_calls: 600, max_trials: 8}
      tolerance: 0.02
    jobs:
      - name: reviews
        dataset: data/reviews.jsonl   # relative to the jobs file
        prompt: prompts/reviews.md
        model: openai/gpt-4o-mini     # or models: [a, b]

Each invocation runs one *round*. A round that was interrupted is resumed (finished jobs are skipped, the
interrupted run continues); once a round is complete, the next invocation starts a new round in which every job
starts from its previous best prompt, re-tunes, and is flagged as a regression when its best test score falls
below the previous round's by more than its tolerance. Responses are cached per round, so a provider's update
of a model behind the same id is measured afresh.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from .config import TrackSpec
from .events import Event, TrackedBus
from .jobs import JobSpec, Unit, job_config, load_jobs
from .parallel import map_threads
from .paths import hold_lock, home_dir, write_text_atomic
from .store import read_json

__all__ = ["Batch", "JobSpec", "Unit", "load_jobs", "run_batch"]


class Batch:
    def __init__(self, jobs_path: str | Path, *, storage: str | None = None, parallel: int = 1,
                 on_event: Event | None = None, strategy: str | None = None, track: TrackSpec | None = None) -> None:
        from .strategies import get_strategy

        self.jobs_path = Path(jobs_path).resolve()
        self.jobs = load_jobs(self.jobs_path)
        if strategy is not None:
            get_strategy(strategy)
            self.jobs = [j.model_copy(update={"strategy": strategy}) for j in self.jobs]
        self.storage = storage
        self.parallel = parallel
        # trackers: a parent run per round, one nested run per job
        self.on_event = TrackedBus([on_event], track or TrackSpec(), checked=False)
        tag = hashlib.sha256(str(self.jobs_path).encode()).hexdigest()[:8]
        self.root = home_dir() / "batch" / f"{self.jobs_path.stem}-{tag}"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.state: dict[str, Any] = {}  # read by run(), under the batch's lock

    # ----------------------------------------------------------------- state
    def _load(self) -> dict[str, Any]:
        f = self.root / "state.json"
        if f.exists():
            return read_json(f, fix="restore it, or delete it: the batch then starts again at round 1, and a job "
                                    "whose round-1 run finished is read back from it at no cost")
        return {"jobs_file": str(self.jobs_path), "rounds": []}

    def _save(self) -> None:
        write_text_atomic(self.root / "state.json", json.dumps(self.state, indent=2))

    def units(self) -> list[Unit]:
        return [Unit(j, m) for j in self.jobs for m in j.model_ids()]

    def _current_round(self) -> dict[str, Any]:
        rounds = self.state["rounds"]
        if rounds and not rounds[-1]["done"]:
            return dict(rounds[-1])
        rnd = {"n": len(rounds) + 1, "started": time.time(), "done": False, "units": {}}
        rounds.append(rnd)
        self._save()
        return rnd

    def _previous(self, unit: Unit, n: int) -> dict[str, Any] | None:
        for rnd in reversed(self.state["rounds"][: n - 1]):
            u = rnd["units"].get(unit.key)
            if u and u.get("status") == "done":
                return dict(u)
        return None

    # ------------------------------------------------------------------- run
    def _run_unit(self, unit: Unit, rnd: dict[str, Any]) -> dict[str, Any]:
        from .optimizer import Optimizer

        n = rnd["n"]
        done = rnd["units"].get(unit.key)
        if done and done.get("status") == "done":
            self.on_event("skip", {"unit": unit.key})
            return dict(done, skipped=True)
        prev = self._previous(unit, n)
        start_prompt = Path(prev["best_prompt_file"]) if prev else Path(unit.job.prompt)
        run_dir = self.root / f"round-{n}" / unit.slug
        config = job_config(unit.job, unit.model, prompt=start_prompt, cache_tag=f"batch-{self.root.name}-r{n}",
                            storage=self.storage)
        self.on_event("unit_start", {"unit": unit.key, "round": n, "warm_start": bool(prev),
                                     "resume": (run_dir / "config.json").exists()})
        with self._lock:
            rnd["units"][unit.key] = {"status": "running", "run_dir": str(run_dir), "model": unit.model}
            self._commit(rnd)
        try:
            summary_file = run_dir / "summary.json"
            if summary_file.exists():
                result = read_json(summary_file)
            else:
                opt = Optimizer(config, run_dir=run_dir, on_event=self.on_event.tagged(unit=unit.key))
                result = opt.run().to_json()
        except Exception as e:  # noqa: BLE001 - a failing job is recorded; the others go on
            entry: dict[str, Any] = {"status": "failed", "run_dir": str(run_dir), "model": unit.model,
                     "error": f"{type(e).__name__}: {e}"[:400]}
        else:
            best_file = self.root / "prompts" / f"{unit.slug}-r{n}.md"
            best_file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(best_file, result["best_prompt"])
            previous_best = prev["best_test"] if prev else None
            entry = {
                "status": "done", "run_dir": str(run_dir), "run_id": result["run_id"], "model": unit.model,
                "warm_start": bool(prev), "previous_best": previous_best,
                "new_baseline": result["baseline_test"], "new_best": result["best_test"],
                "best_test": result["best_test"], "significant": result["significant"],
                "model_calls": result["model_calls"], "cost_usd": result["cost_usd"],
                "best_prompt_file": str(best_file), "tolerance": unit.job.tolerance,
                "regression": previous_best is not None and result["best_test"] < previous_best - unit.job.tolerance,
            }
        with self._lock:
            rnd["units"][unit.key] = entry
            self._commit(rnd)
        self.on_event("unit_done", {"unit": unit.key, **entry})
        return entry

    def _commit(self, rnd: dict[str, Any]) -> None:
        self.state["rounds"][rnd["n"] - 1] = rnd
        self._save()

    def run(self) -> dict[str, Any]:
        lock = hold_lock(self.root / "lock", f"batch {self.jobs_path} is running in another process",
                         fix="wait for it to finish, or stop it and run the batch again to resume")
        ok = False
        try:
            self.state = self._load()  # what the process that held the lock last committed
            result = self._run()
            ok = True
            return result
        finally:
            lock.release()
            self.on_event.finish(ok)

    def _run(self) -> dict[str, Any]:
        rnd = self._current_round()
        self.on_event("round", {"round": rnd["n"], "resumed": bool(rnd["units"]), "state_dir": str(self.root)})
        units = self.units()
        entries = map_threads(lambda u: self._run_unit(u, rnd), units, self.parallel)
        with self._lock:
            rnd["done"] = all(e["status"] == "done" for e in entries)
            self._commit(rnd)
        rows = [{"job": u.key, **{k: v for k, v in e.items() if k != "best_prompt_file"}}
                for u, e in zip(units, entries)]
        result = {"round": rnd["n"], "state_dir": str(self.root), "jobs": rows,
                  "regressions": [r["job"] for r in rows if r.get("regression")],
                  "failed": [r["job"] for r in rows if r["status"] == "failed"], "complete": rnd["done"]}
        self.on_event("batch_done", result)
        return result


def run_batch(jobs_path: str | Path, *, storage: str | None = None, parallel: int = 1,
              on_event: Event | None = None, strategy: str | None = None,
              track: TrackSpec | None = None) -> dict[str, Any]:
    """Run (or resume) one round of a jobs file (the Python API behind `reflexopt batch`). `strategy`
    overrides every job's own."""
    return Batch(jobs_path, storage=storage, parallel=parallel, on_event=on_event, strategy=strategy,
                 track=track).run()
