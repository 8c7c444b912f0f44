"""The search seam: what a strategy gets, what it must do, and how it records candidates.

`optimize` runs in three phases. The baseline phase scores the starting prompt on val (and measures judge
noise); the search phase hands a :class:`SearchContext` to one :class:`Strategy`; the verdict phase, shared by
every strategy, selects the best candidate on val (never worse than the baseline, gains above judge noise only)
and scores baseline and best on test. So two strategies run on one workload share the dataset, split, scorer,
model clients, response cache, budget, run store, verdict and report: their results compare fairly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..events import Event
from ..pool import Candidate, Selection, State, from_study, select

if TYPE_CHECKING:
    from ..runner import Runner
    from ..search import Search, TrialRecord
    from ..store import RunStore


class Strategy(Protocol):
    """A search strategy.

    Contract:
    - `search(ctx)` runs after the baseline is scored on val and returns the reason it stopped.
    - Every model call goes through `ctx.runner`'s clients (task, reasoning, judge), so the response cache,
      the hard budget (`--max-calls`, `--max-cost`), retries and accounting hold. A strategy never calls a
      provider any other way.
    - It never reads the test split (`ctx.runner.test`); the verdict does.
    - Each candidate it wants considered is recorded with `ctx.record(...)` (scored on all of val and stored as
      a finished trial of the run's study), or as a trial of `ctx.search` with per-case reports, so the
      verdict, `runs show` and the report see it like any other.
    - It stops when `ctx.stop_reason()` returns a reason (budget, time, target), and it does not raise for a
      failed call: failed calls are results.
    - The same seed, data and models give the same candidates.
    """

    name: str

    async def search(self, ctx: SearchContext) -> str: ...


@dataclass
class SearchContext:
    runner: Runner
    search: Search
    store: RunStore
    baseline: Candidate
    min_gain: float
    started: float = field(default_factory=time.monotonic)
    emit: Event = field(default=lambda kind, data: None)
    _last: Selection | None = field(default=None, init=False, repr=False)  # the selection after the last trial

    @property
    def config(self) -> Any:
        return self.runner.config

    def timed_out(self) -> bool:
        max_time = self.config.budget.max_time_s
        return max_time is not None and time.monotonic() - self.started >= max_time

    def stop_reason(self) -> str:
        """The limits every strategy obeys: target, time, budget (patience and trial limits are the reflex
        strategy's own)."""
        return self.runner.limit_reason(self.selection(), timed_out=self.timed_out())

    async def record(self, prompt: Any, *, operator: str, reasoning: str, parent: str = "baseline",
                     params: dict[str, Any] | None = None) -> Candidate:
        """Score a prompt on all of val (memo and budget apply) and store it as a finished trial."""
        r = self.runner
        trial = self.search.ask()
        cand = Candidate(f"t{trial.number}", prompt, operator, parent, reasoning, dict(params or {}),
                         trial=trial.number, worker=r.worker, asked=operator)
        order = list(r.val)
        random.Random(self.config.seed * 100_003 + trial.number).shuffle(order)
        results, _ = await r.evaluate(cand, order, "val")
        val = {x.case_id: x.score for x in results if x.score is not None}
        for cid, v in val.items():
            trial.report(v, r.index[cid])
        cand = cand.scored(val, State.COMPLETE if len(val) == len(r.val) else
                           (State.FAILED if not val else State.INCOMPLETE))
        r.finish(trial, cand, cand.val_mean if cand.val else None)
        self.after_trial(cand)
        return cand

    def selection(self, records: Sequence[TrialRecord] | None = None) -> Selection:
        """The selection over the study's trials (`records`: already read from the study, saving a read)."""
        r = self.runner
        return select(from_study(self.search.records() if records is None else records, r.val), len(r.val),
                      self.min_gain)

    def after_trial(self, cand: Candidate, before: Selection | None = None, *,
                    records: Sequence[TrialRecord] | None = None) -> Selection:
        """Log a finished trial (events, progress file, callback) and return the new selection."""
        r = self.runner
        before = before or self._last
        sel = self.selection(records)
        accepted = sel.best.id == cand.id and (before is None or before.best.id != cand.id)
        usage = r.usage()
        self.store.event("trial", candidate=cand.id, operator=cand.operator, state=cand.state,
                         val=cand.val_mean, accepted=accepted, best=sel.best.id, best_val=sel.best.val_mean,
                         usage=usage)
        self.save_progress(sel)
        self.emit("trial", {"n": sel.trials, "candidate": cand.id, "operator": cand.operator, "state": cand.state,
                            "pruned_by": cand.pruned_by, "parent": cand.parent,
                            "val": cand.val_mean, "n_val": len(cand.val), "accepted": accepted,
                            "best_val": sel.best.val_mean, "usage": usage})
        self._last = sel
        return sel

    def save_progress(self, sel: Selection | None = None) -> None:
        """The progress snapshot `runs list` reads: calls, cost, trials, baseline and best val so far."""
        usage = self.runner.usage()
        self.store.write_progress(calls=usage["budget_calls_used"], cost_usd=usage["cost_usd"],
                                  trials=sel.trials if sel else 0, baseline_val=self.baseline.val_mean,
                                  best_val=sel.best.val_mean if sel else self.baseline.val_mean)
