"""The run's evaluation service: the workload, the Task that produces outputs, the scorer, the budget, the memo
of scored cases and the pruning hooks. Shared by `optimize`, `reflexopt worker` and every strategy: a strategy
asks it to score a candidate on some cases and never calls a model for a case itself.

`connect` builds the model clients (this may start the local model server on first call); until then nothing
is called. A resumed run's memo comes from the run folder, so it pays for nothing it already has.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from .budget import Limits, RunBudget
from .errors import ConfigError
from .evaluate import CaseResult, case_score, check_specs, run_case, take_outcome, usage_of
from .events import Event, ignore
from .models import ModelClient, get_client, spec_price
from .paths import check_writable
from .promptset import PromptSet
from .scoring import Scorer, make_scorer, scorer_clients
from .task import Task, make_task, starting_point, task_spec
from .workload import Workload

if TYPE_CHECKING:
    from .config import OptimizeConfig
    from .data import Case

Memo = dict[tuple[str, str, str], tuple[CaseResult, int]]


class Pruner(Protocol):
    """The pruning hook: each scored case is reported; True stops the candidate (search.Trial meets it)."""

    def report(self, value: float, step: int, output: str | None = None) -> None: ...

    def should_prune(self) -> bool: ...


class Scored(Protocol):
    """What the evaluator needs of a candidate: an id (for events) and its prompts (the memo key is theirs)."""

    @property
    def id(self) -> str: ...

    @property
    def prompts(self) -> PromptSet: ...


class Evaluator:
    def __init__(self, config: OptimizeConfig, baseline: PromptSet | str | None = None, *, memo: Memo | None = None,
                 on_event: Event | None = None) -> None:
        """`baseline`: the starting prompts, their stored text (a resumed run, a worker) or None to read the
        config's prompt file."""
        self.config = cfg = config
        self.start = start = starting_point(cfg)  # the task decides where the run starts and what its cases are
        if baseline is None:
            baseline = start.prompts()
        elif isinstance(baseline, str):
            baseline = PromptSet.parse(baseline, "baseline")
        self.emit: Event = on_event or ignore
        self.work = work = Workload.load(cfg.data, baseline.primary, fractions=cfg.split, seed=cfg.seed,
                                         balanced=cfg.balanced, check_fields=start.check_fields, aside=start.aside,
                                         transform=start.transform)
        self.baseline_prompts = baseline
        self.cases, self.splits, self.index, self.facts = list(work.cases), work.splits, work.index, work.facts
        self.val = work.val
        self.test = work.test
        self.memo: Memo = memo if memo is not None else {}
        self.on_case_scored: list[Any] = []  # callables (key, split, result, calls): the run store's log

    def preflight(self) -> None:
        """Check everything that can fail before a call: every model id, setting and API key (task, reasoning,
        judge), the metric or rubric. Raises reflexopt's own errors; makes no call."""
        cfg = self.config
        if cfg.output and cfg.pipeline is None:
            check_writable(cfg.output, "-o", reads={"the dataset": cfg.data.path})  # -o PROMPT: tuned in place
        check_specs((cfg.model, cfg.reasoning, cfg.scorer.judge), cfg.scorer, self.cases)
        if cfg.pipeline is not None:
            make_task(cfg, None).check()

    def check_data(self, known: str | None) -> None:
        """Stop before any call when the run's scores are for another copy of the dataset (`known`: the
        fingerprint the run recorded)."""
        self.work.check_fingerprint(known)

    def connect(self, *, prior_calls: int = 0, limits: Limits | None = None, started: float | None = None) -> None:
        """Build the task, the scorer, the reasoning model's client and the budget. `prior_calls`: calls a
        resumed run already made outside case scoring (diagnoses, rewrites)."""
        cfg = self.config
        # only train and val references shape the run (the output cap, the label set, the default metric); test
        # rows are checked for what the scorer needs, never read for anything else before the verdict
        seen = self.splits.train + self.splits.val
        spec, cap_note = task_spec(cfg.model, seen, cfg.concurrency, cap=self.start.default_task)
        self.task: Task = make_task(cfg, get_client(spec, role="task"))
        self.scorer: Scorer
        self.scorer, note = make_scorer(cfg.scorer, seen)
        validate = getattr(self.scorer, "validate", None)
        if validate is not None:
            validate(self.splits.test)
        braces = [w for name in self.baseline_prompts.names for w in self.baseline_prompts[name].brace_warnings()]
        for n in (note, cap_note, *braces):
            if n:
                self.emit("note", {"message": n})
        reasoning, self.reasoner_why = cfg.reasoner()
        self.reasoner: ModelClient = get_client(reasoning, role="reasoning")
        self.clients: list[ModelClient] = [*self.task.clients, self.reasoner, *scorer_clients(self.scorer)]
        prior_calls += sum(calls for _, calls in self.memo.values())
        prior_cost = sum(r.cost_usd for r, _ in self.memo.values() if not r.cached)
        self.budget = RunBudget(cfg.budget.max_calls, cfg.budget.max_cost, prior_calls=prior_calls,
                                prior_cost=prior_cost, started=started,
                                limits=limits or Limits(max_time_s=cfg.budget.max_time_s,
                                                        trial_limit=cfg.budget.trial_limit,
                                                        patience=cfg.budget.patience, target=cfg.budget.target))
        for c in self.clients:
            c.gate = self.budget
            self.budget.meters.append(c.meter)

    @property
    def task_client(self) -> ModelClient:
        """The task model's client (strategies that drive the model themselves, such as DSPy's, use it)."""
        return self.task.clients[0]

    @property
    def calls_per_case(self) -> int:
        """Calls to score one case: the task's (one model answer; a pipeline's most calls on one case so far),
        plus the judge's verdict when there is one."""
        task_calls = max(1, int(getattr(getattr(self, "task", None), "most_calls", 1)))
        return task_calls + (1 if self.config.scorer.judge else 0)

    @property
    def test_reserve(self) -> int:
        """Calls kept for the final verdict, so it never runs out part-way: both prompts on every test case and,
        with a judge, a quarter more for its parse retries and for re-judging the verdicts that failed."""
        base = 2 * len(self.splits.test) * self.calls_per_case
        return base + (math.ceil(0.5 * len(self.splits.test)) if self.config.scorer.judge else 0)

    async def rejudge(self, cand: Scored, results: Sequence[CaseResult], split_name: str) -> tuple[list[CaseResult],
                                                                                                   int, int]:
        """The verdict's second chance for a judge: every case whose output the judge could not score (an
        unparseable verdict after its retries, a failed judge call) is judged once more as a new request (another
        sample, so not the cached failure). Returns the results, how many were re-judged and how many of those
        were then scored. A metric's failures, task failures and budget refusals are left as they are."""
        if getattr(self.scorer, "kind", "") != "judge":
            return list(results), 0, 0
        rescore: Any = self.scorer.score  # a judge's score takes `sample`: another draw of the same request
        by_id = {c.id: c for c in self.cases}
        todo = [i for i, x in enumerate(results) if x.score is None and x.output and not x.budget_exhausted]
        out = list(results)
        scores = await asyncio.gather(*(rescore(by_id[out[i].case_id], out[i].output, sample=1) for i in todo))
        ok = 0
        for i, s in zip(todo, scores):
            if s.budget_exhausted:
                self.budget.mark_exhausted()
            x = out[i]
            if s.value is None:
                out[i] = replace(x, error=f"{x.error}; re-judged: {s.error}", calls=x.calls + s.calls)
                continue
            ok += 1
            out[i] = replace(x, score=s.value, passed=s.passed, reasoning=s.reasoning, category=s.category,
                             error=None, flag=s.flag, calls=x.calls + s.calls)
            self._record(cand.prompts.key, split_name, out[i])
        return out, len(todo), ok

    def _record(self, key: str, split_name: str, r: CaseResult) -> None:
        """A case scored: into the memo when it has a score to reuse, and to every `on_case_scored` log."""
        if r.error is None:
            self.memo[(key, split_name, r.case_id)] = (r, r.calls)
        for log in self.on_case_scored:
            log(key, split_name, r, r.calls)

    def usage(self) -> dict[str, Any]:
        u = usage_of(*self.clients)
        u["budget_calls_used"] = self.budget.granted
        return u

    def limit_reason(self, best_val: float) -> str:
        """The limits every strategy obeys (target, time, budget): '' when none is reached."""
        return self.budget.limit_reason(best_val, min_calls=min(8, len(self.val)))

    async def evaluate(self, cand: Scored, cases: Sequence[Case], split_name: str,
                       trial: Pruner | None = None) -> tuple[list[CaseResult], bool]:
        """Evaluate with the memo; report each case to the trial; stop as soon as the pruner says so.

        The trial sees the cases in the order given (submission order), whatever order they finish in: a case
        that finishes early waits for the ones before it. So the same seed makes the same pruning decisions, and
        the candidate the same scores, at any concurrency and latency. Cases already in flight when the trial is
        pruned are still awaited, recorded and cached (they are paid), but are not part of the candidate's
        scores. Returns the results and whether the candidate was pruned before every case was scored."""
        key = cand.prompts.key
        results: list[CaseResult] = []
        ready: dict[int, CaseResult | None] = {}  # finished, by position; None: refused for the budget
        memo: dict[int, CaseResult] = {}
        for i, c in enumerate(cases):
            hit = self.memo.get((key, split_name, c.id))
            if hit is not None and hit[0].error is None:
                memo[i] = hit[0]
        window = max(1, self.config.concurrency or self.task.concurrency)
        flying: dict[asyncio.Future[CaseResult], int] = {}
        state = {"taken": 0, "submitted": 0, "stopped": False}

        def submit_through(last: int) -> None:
            """Start cases up to position `last` (memo hits are ready at once). Case j starts exactly when case
            j - window has been shown to the trial, so the cases started before a prune are the same however
            the cases finish: a re-run from the cache asks for nothing new."""
            while state["submitted"] <= min(last, len(cases) - 1):
                i = state["submitted"]
                state["submitted"] += 1
                if i in memo:
                    ready[i] = memo[i]
                else:
                    flying[asyncio.ensure_future(run_case(cases[i], cand.prompts, self.task, self.scorer))] = i

        def advance() -> None:
            while not state["stopped"] and state["taken"] in ready:
                r = ready.pop(state["taken"])
                state["taken"] += 1
                if r is not None:
                    results.append(r)
                    score = case_score(r)
                    if trial is not None and score is not None:
                        trial.report(score, self.index[r.case_id], r.output)
                        if trial.should_prune():
                            state["stopped"] = True
                            return
                submit_through(state["taken"] + window - 1)

        submit_through(window - 1)
        advance()
        try:
            while flying:
                done, _ = await asyncio.wait(list(flying), return_when=asyncio.FIRST_COMPLETED)
                failed = [e for e in (t.exception() for t in done) if e is not None]  # each outcome taken
                if failed:  # a fatal error (a refused key): the others' results are recorded first
                    for t in done:
                        flying.pop(t)
                    raise failed[0]
                for t in sorted(done, key=lambda t: flying[t]):
                    i = flying.pop(t)
                    r = t.result()
                    if r.budget_exhausted:
                        self.budget.mark_exhausted()
                        ready[i] = None
                        continue
                    self._record(key, split_name, r)
                    self.emit("case", {"split": split_name, "candidate": cand.id, "score": r.score,
                                       "case_id": r.case_id, "output": r.output[:300] or (r.error or "")[:300]})
                    ready[i] = r
                advance()
        finally:
            for t in flying:
                t.cancel()
                t.add_done_callback(take_outcome)
        # pruned on its very last case: every case is scored, so it is a complete candidate
        return results, bool(state["stopped"]) and len(results) < len(cases)

    def task_price(self) -> tuple[tuple[float, float] | None, str]:
        """USD per prompt and per completion token of the task model (0 for local models; None: unknown), and
        where the price comes from (a model setting, a prices file, litellm's map, ...)."""
        return spec_price(self.config.model)

    async def aclose(self) -> None:
        """Stop what the task started (a pipeline's endpoint and worker processes)."""
        close = getattr(getattr(self, "task", None), "aclose", None)
        if close is not None:
            await close()

    def check_task(self) -> None:
        """After the baseline: a prompt the task never read is a mistake in the command (a pipeline's --prompt
        that its function does not use), named with the fix."""
        read, ran = getattr(self.task, "read", None), getattr(self.task, "cases_run", 0)
        if read is None or not ran:
            return
        unread = [n for n in self.baseline_prompts.names if n not in read]
        if unread:
            raise ConfigError(f"the pipeline never read prompt {', '.join(repr(n) for n in unread)} on {ran} cases",
                              fix="read it as prompts[NAME] in your function, or drop that --prompt")

    async def judge_agreement(self, baseline: Scored, sample: int) -> Any:
        """The judge's self-agreement (agreement.SelfAgreement), from re-judging up to `sample` of the baseline's
        scored val outputs; None for metrics, which are deterministic."""
        measure = getattr(self.scorer, "self_agreement", None)
        if measure is None or sample == 0:
            return None
        first = sorted(((cid, res) for (k, s, cid), (res, _) in self.memo.items()
                        if k == baseline.prompts.key and s == "val" and res.score is not None),
                       key=lambda t: self.index.get(t[0], 0))[:sample]
        by_id = {c.id: c for c in self.cases}
        return await measure([(by_id[cid], res.output) for cid, res in first])

    def known_cases(self) -> list[Case]:
        """The val cases, in dataset order: the judge's known answers are asked about the first ones."""
        return sorted(self.val, key=lambda c: self.index.get(c.id, 0))

    async def judge_known(self) -> Any:
        """The judge's verdicts on known answers (agreement.KnownAnswers) for the first val cases; None for
        metrics."""
        measure = getattr(self.scorer, "known_answers", None)
        return None if measure is None else await measure(self.known_cases())
