"""The search seam: what a strategy gets, what it must do, and how it records candidates.

`optimize` runs in three phases. The baseline phase scores the starting prompt on val (and measures judge
noise); the search phase hands a :class:`SearchContext` to one :class:`Strategy`, which owns its loop; the
verdict phase, shared by every strategy, selects the best candidate on val (never worse than the baseline, gains
above judge noise only) and scores baseline and best on test. So two strategies run on one workload share the
dataset, split, scorer, model clients, response cache, budget, run store, verdict and report: their results
compare fairly. `reflexopt worker` hands the same context (without a run folder) to the strategy the study
names, so any strategy that can share a study runs there through the same code path.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..events import Event, ignore
from ..pool import Candidate, Selection, State, case_scores, from_study, select
from ..promptset import PromptSet

if TYPE_CHECKING:
    from ..budget import RunBudget
    from ..data import Case
    from ..evaluate import CaseResult
    from ..evaluator import Evaluator, Pruner
    from ..models import ModelClient
    from ..prompt import Prompt
    from ..scoring import Scorer
    from ..search import Search, TrialRecord
    from ..workload import TaskFacts


class Strategy(Protocol):
    """A search strategy.

    Contract:
    - `search(ctx)` runs after the baseline is scored on val and returns the reason it stopped.
    - Every case is scored through `ctx.evaluate` (the run's Task and scorer) and every other model call goes
      through the context's clients (`ctx.reasoner`, `ctx.task_client`), so the response cache, the hard budget
      (`--max-calls`, `--max-cost`), retries and accounting hold. A strategy never calls a provider any other way.
    - It never sees the test split: the context does not hand it over; the verdict scores test.
    - Each candidate it wants considered is recorded with `ctx.record(...)` (scored on all of val and stored as
      a finished trial of the run's study), or as a trial of `ctx.search` with per-case reports, so the
      verdict, `runs show` and the report see it like any other.
    - It stops when `ctx.stop_reason()` returns a reason (budget, time, target, or, in a worker, the run ended),
      and it does not raise for a failed call: failed calls are results.
    - The same seed, data and models give the same candidates.
    - `distributed`: True when several processes may run it on one study at once (`reflexopt worker`); a
      worker refuses a strategy that is not. `any_task` (default True): False for a strategy that drives the task
      model itself and so cannot run a pipeline; optimize refuses that combination.
    """

    name: str
    distributed: bool

    async def search(self, ctx: SearchContext) -> str: ...


@dataclass
class SearchContext:
    evaluator: Evaluator = field(repr=False)
    search: Search
    baseline: Candidate
    min_gain: float
    emit: Event = field(default=ignore)
    worker: str = ""  # this process, as recorded on the candidates it makes
    keep_going: Callable[[], bool] = field(default=lambda: True)  # False once the run ended (a worker's study)
    _last: Selection | None = field(default=None, init=False, repr=False)  # the selection after the last trial
    _constant: list[float | None] = field(default_factory=list, init=False, repr=False)  # constant_val, once

    # ------------------------------------------------------------ what a strategy may read
    @property
    def config(self) -> Any:
        return self.evaluator.config

    @property
    def noise(self) -> float:
        """The SD of one judge verdict on the 0..1 scale (0 for a deterministic scorer): `min_gain` is twice the
        standard error it gives over val."""
        return self.min_gain * math.sqrt(len(self.val)) / 2

    @property
    def train(self) -> tuple[Case, ...]:
        return self.evaluator.splits.train

    @property
    def val(self) -> list[Case]:
        return self.evaluator.val

    @property
    def index(self) -> Mapping[str, int]:
        """Case id -> its index in val (the step a per-case score is reported at)."""
        return self.evaluator.index

    @property
    def facts(self) -> TaskFacts:
        return self.evaluator.facts

    @property
    def baseline_prompts(self) -> PromptSet:
        return self.evaluator.baseline_prompts

    @property
    def budget(self) -> RunBudget:
        return self.evaluator.budget

    @property
    def task_client(self) -> ModelClient:
        return self.evaluator.task_client

    @property
    def reasoner(self) -> ModelClient:
        return self.evaluator.reasoner

    @property
    def scorer(self) -> Scorer:
        return self.evaluator.scorer

    async def constant_val(self) -> float | None:
        """On a label task scored by a label metric, what answering the train split's most common label to every
        val case scores (evaluate.constant_scores, unrounded; no model call): a best at or below it shows no sign
        that the task model tells the cases apart. None otherwise."""
        if not self._constant:
            from ..evaluate import constant_scores

            hit = (await constant_scores(self.scorer, self.train, self.val)
                   if self.facts.categorical and getattr(self.scorer, "corpus", None) else None)
            self._constant.append(sum(hit[1]) / len(hit[1]) if hit else None)
        return self._constant[0]

    @property
    def renders(self) -> bool:
        """Whether reflexopt renders the prompts into messages (False for a pipeline: its program does), so
        operators that change roles or demo turns mean something."""
        return bool(getattr(self.evaluator.task, "renders", True))

    @property
    def allowed(self) -> tuple[str, ...] | None:
        """The only operators that mean something for this task (alignment's rubric: demos and rewrites), or
        None for all."""
        return getattr(self.evaluator.task, "operators", None)

    @property
    def calls_per_case(self) -> int:
        return self.evaluator.calls_per_case

    def usage(self) -> dict[str, Any]:
        return self.evaluator.usage()

    async def evaluate(self, cand: Candidate, cases: Sequence[Case], split_name: str,
                       trial: Pruner | None = None) -> tuple[list[CaseResult], bool]:
        """Score `cand` on train or val cases (memo, budget and pruning hook apply)."""
        if split_name == "test":
            raise ValueError("a strategy never scores the test split")
        return await self.evaluator.evaluate(cand, cases, split_name, trial)

    # ------------------------------------------------------------ stop rules
    def timed_out(self) -> bool:
        return self.budget.timed_out()

    def stop_reason(self, sel: Selection | None = None) -> str:
        """The limits every strategy obeys: target, time, budget, and the run's end (patience and trial limits
        are a trial-by-trial strategy's own, read from `ctx.budget`)."""
        if not self.keep_going():
            return "run ended"
        return self.evaluator.limit_reason((sel or self.selection()).best.val_mean)

    # ------------------------------------------------------------ recording candidates
    async def record(self, prompt: Prompt | PromptSet, *, operator: str, reasoning: str, parent: str = "baseline",
                     params: dict[str, Any] | None = None) -> Candidate:
        """Score a prompt (or a set of named prompts) on all of val (memo and budget apply) and store it as a
        finished trial."""
        trial = self.search.ask()
        cand = Candidate(f"t{trial.number}", PromptSet.of(prompt), operator, parent, reasoning, dict(params or {}),
                         trial=trial.number, worker=self.worker, asked=operator)
        order = list(self.val)
        random.Random(self.config.seed * 100_003 + trial.number).shuffle(order)
        results, _ = await self.evaluate(cand, order, "val")
        val = case_scores(results)
        for cid, v in val.items():
            trial.report(v, self.index[cid])
        cand = cand.scored(val, State.COMPLETE if len(val) == len(self.val) else
                           (State.FAILED if not val else State.INCOMPLETE))
        self.finish(trial, cand, cand.val_mean if cand.val else None)
        self.after_trial(cand)
        return cand

    def finish(self, trial: Any, cand: Candidate, value: float | None) -> None:
        """Tell the study how a trial ended, with the candidate it made (every process can rebuild it)."""
        failed = cand.state in (State.FAILED, State.INCOMPLETE)
        self.search.tell(trial, None if failed else value, pruned=cand.state == State.PRUNED, failed=failed,
                         attrs=cand.attrs())
        self.emit("candidate", {"record": cand.record(), "markdown": cand.prompts.to_markdown()})

    def selection(self, records: Sequence[TrialRecord] | None = None) -> Selection:
        """The selection over the study's trials (`records`: already read from the study, saving a read)."""
        return select(from_study(self.search.records() if records is None else records, self.val), len(self.val),
                      self.min_gain)

    def after_trial(self, cand: Candidate, before: Selection | None = None, *,
                    records: Sequence[TrialRecord] | None = None) -> Selection:
        """Announce a finished trial (one `trial` event: the live view, the run log and the progress file all
        subscribe to it) and return the new selection."""
        before = before or self._last
        sel = self.selection(records)
        accepted = sel.best.id == cand.id and (before is None or before.best.id != cand.id)
        self.emit("trial", {"n": sel.trials, "candidate": cand.id, "operator": cand.operator, "state": cand.state,
                            "pruned_by": cand.pruned_by, "parent": cand.parent, "target": cand.params.get("target"),
                            "duplicate_of": cand.params.get("duplicate_of"), "collapsed": cand.params.get("collapsed"),
                            "val": cand.val_mean, "n_val": len(cand.val), "accepted": accepted,
                            "best": sel.best.id, "best_val": sel.best.val_mean, "usage": self.usage()})
        self._last = sel
        return sel
