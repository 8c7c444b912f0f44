"""One run's working context and one trial of the search, shared by `optimize` and `reflexopt worker`.

A Runner loads the data and split, builds the model clients and the scorer, evaluates candidates (with a
memo of scored cases, so a resumed run pays for nothing it already has), and runs trials: ask -> pick a Pareto
parent -> diagnose -> propose -> evaluate val in shuffled order with per-case reports and pruning -> tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .budget import CallBudget
from .config import OptimizeConfig
from .data import Case
from .diagnose import Diagnosis, diagnose
from .errors import ConfigError
from .evaluate import CaseResult, Scorer, iter_results, make_scorer, task_spec, usage_of
from .events import Event
from .models import ModelClient, get_client
from .operators import LLM_OPERATORS, Outcome, available, choose, get, reasoner_ok, untried
from .paths import check_writable
from .pool import Candidate, Selection, State, counts_as_trial, outcomes, pareto_parent
from .prompt import Prompt
from .propose import propose, vary
from .search import DEMO_KNOBS, HEARTBEAT_S, Search, Trial, TrialRecord
from .store import RunStore
from .workload import Workload


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def demo_shape(cand: Candidate, pool: Sequence[Candidate]) -> dict[str, Any] | None:
    """The demo settings (count, pick, order; style as the candidate shows them) that built `cand`'s demos: those
    of its nearest demos ancestor. None when its demos came from elsewhere (the starting prompt) or it has none."""
    by_id = {c.id: c for c in pool}
    node: Candidate | None = cand
    for _ in range(len(pool) + 1):
        if node is None or not node.prompt.demos:
            return None
        if node.operator == "demos" and all(k in node.params for k in DEMO_KNOBS):
            return {**{k: node.params[k] for k in DEMO_KNOBS}, "demo_style": cand.prompt.demo_style}
        node = by_id.get(node.parent or "")
    return None


class Runner:
    def __init__(self, config: OptimizeConfig, baseline: Prompt, *, store: RunStore | None,
                 on_event: Event | None = None) -> None:
        self.config = cfg = config
        self.store = store
        self.on_event: Event = on_event or (lambda kind, data: None)
        self.work = work = Workload.load(cfg.data, baseline, fractions=cfg.split, seed=cfg.seed)
        self.baseline_prompt = baseline
        self.cases, self.splits, self.index, self.facts = list(work.cases), work.splits, work.index, work.facts
        self.val: list[Case] = work.val
        self.test: list[Case] = work.test
        self.worker = worker_id()
        self.out_of_budget = False
        self.diagnoses: dict[str, tuple[Diagnosis, list[CaseResult]]] = {}
        self.memo: dict[tuple[str, str, str], tuple[CaseResult, int]] = store.evals() if store else {}
        self.reasoner_given_up = False
        self.redraw: Candidate | None = None  # set by stop_reason: the next trial draws other demos for it

    def preflight(self) -> None:
        """Check everything that can fail before a call: every model id, setting and API key (task, reasoning,
        judge), the metric or rubric. Raises reflexopt's own errors; makes no call."""
        from .models import resolve_backend

        cfg = self.config
        if cfg.output:
            check_writable(cfg.output, "-o", reads={"the dataset": cfg.data.path})  # -o PROMPT: tuned in place
        make_scorer(cfg.scorer, self.cases)
        for spec in (cfg.model, cfg.reasoning, cfg.scorer.judge):
            if spec is not None:
                resolve_backend(spec)

    def connect(self, search: Search) -> None:
        """Check that this is the dataset the run's scores are for; build clients, scorer and budget (this may
        start the local model server on first call)."""
        cfg = self.config
        known = search.attrs().get("data_fingerprint")
        if known is None and self.store is not None:  # the process that owns the run records it (a worker never)
            search.set("data_fingerprint", self.work.fingerprint)
        elif known is not None and known != self.work.fingerprint:
            raise ConfigError(f"{cfg.data.path}: the dataset is not the one this run started on (its cases, "
                              "references or order changed), so the run's stored scores are not for these cases",
                              fix="restore the file the run started on (a worker needs the same file as the machine "
                                  "that started the run), or start a new run on this one: calls already paid are "
                                  "answered from the response cache")
        self.search = search
        everything = self.splits.train + self.splits.val + self.splits.test
        spec, cap_note = task_spec(cfg.model, everything, cfg.concurrency)
        self.task = get_client(spec, role="task")
        self.scorer: Scorer
        self.scorer, note = make_scorer(cfg.scorer, everything)
        for n in (note, cap_note):
            if n:
                self.on_event("note", {"message": n})
        # the reasoning model writes whole prompts: it does not inherit the task's completion limit
        self.reasoner: ModelClient = get_client(cfg.reasoning or cfg.model.model_copy(update={"max_tokens": None}),
                                                role="reasoning")
        judge = getattr(self.scorer, "client", None)
        self.clients = [self.task, self.reasoner] + ([judge] if isinstance(judge, ModelClient) else [])
        prior_calls = sum(calls for _, calls in self.memo.values())
        if self.store is not None:
            prior_calls += sum(int(e.get("calls", 0)) for e in self.store.events()
                               if e["event"] in ("diagnosis", "proposal"))
        prior_cost = sum(r.cost_usd for r, _ in self.memo.values() if not r.cached)
        self.budget = CallBudget(cfg.budget.max_calls, cfg.budget.max_cost, prior_calls=prior_calls,
                                 prior_cost=prior_cost)
        for c in self.clients:
            c.gate = self.budget
            self.budget.meters.append(c.meter)

    @property
    def calls_per_case(self) -> int:
        """Paid calls to score one case: the task model's answer, plus the judge's verdict when there is one."""
        return 2 if self.config.scorer.judge else 1

    def usage(self) -> dict[str, Any]:
        u = usage_of(*self.clients)
        u["budget_calls_used"] = self.budget.granted
        return u

    def operators(self, pool: Sequence[Candidate]) -> tuple[tuple[str, ...], list[Outcome]]:
        """The operators available now and the history the policy learns from (no side effect). The reasoning
        model's operators are dropped once its rewrites keep being unusable."""
        history = outcomes(pool)
        train = self.splits.train
        ops = available(categorical=self.facts.categorical, has_references=any(c.ideal for c in train),
                        has_train=bool(train), reasoner=True, reasoner_healthy=reasoner_ok(history))
        return ops, history

    def _note_reasoner(self, history: Sequence[Outcome]) -> None:
        """Say once, in the log and as a note, that the reasoning model is no longer asked."""
        if self.reasoner_given_up or reasoner_ok(history):
            return
        self.reasoner_given_up = True
        asked = [h for h in history if h.asked_llm]
        why = (f"{sum(h.llm_usable for h in asked)} of {len(asked)} rewrites by the reasoning model were usable; "
               "it is not asked again in this run")
        self._log("reasoner_given_up", reason=why)
        self.on_event("note", {"message": why})

    def limit_reason(self, sel: Selection, *, timed_out: bool = False) -> str:
        """The limits every strategy obeys: target, time and budget ('' when none is reached)."""
        b = self.config.budget
        if b.target is not None and sel.best.val_mean >= b.target:
            return "target reached"
        if timed_out:
            return "max time"
        if self.out_of_budget or self.budget.remaining() < min(8, len(self.val)):
            return "budget"
        return ""

    def stop_reason(self, records: Sequence[TrialRecord], sel: Selection, pool: Sequence[Candidate] = (), *,
                    timed_out: bool = False) -> str:
        """Why the reflex search should stop now ('' to go on): the limits plus patience, an exhausted search
        space and the trial limit, which `optimize` and every worker obey. Patience does not stop the search
        while an available operator family is still untried."""
        limit = self.limit_reason(sel, timed_out=timed_out)
        if limit:
            return limit
        b = self.config.budget
        if self.budget.remaining() < len(self.val) * self.calls_per_case:
            return "budget"  # too little left to score a candidate on all of val: it could never be accepted
        self.redraw = None
        if sel.since_gain >= b.patience and not (pool and untried(*self.operators(pool))):
            # patience is out: before stopping, `patience` more trials draw other demos for the best prompt (a
            # gated draw costs about 15 calls; demo sets are where small models gain most, and an accepted draw
            # resumes the whole search)
            if not pool or "demos" not in self.operators(pool)[0]:
                return f"no accepted gain in {b.patience} trials"
            last = next(i for i, c in enumerate(pool) if c.id == sel.accepted[-1])
            if sum(1 for c in pool[last + 1:] if c.params.get("redraw")) >= b.patience:
                return f"no accepted gain in {b.patience} trials, then in {b.patience} demo draws on the best"
            self.redraw = sel.best
        tail = [c.state for c in pool if c.id != "baseline"][-2 * b.patience:]
        if len(tail) == 2 * b.patience and all(s == "duplicate" for s in tail):
            return "search space exhausted (only known prompts came back)"
        if sum(1 for t in records if counts_as_trial(t)) >= b.trial_limit:
            return "max trials"
        return ""

    def _log(self, kind: str, **data: Any) -> None:
        if self.store is not None:
            self.store.event(kind, **data)

    # ------------------------------------------------------------ evaluation
    async def evaluate(self, cand: Candidate, cases: Sequence[Case], split_name: str,
                       trial: Trial | None = None) -> tuple[list[CaseResult], bool]:
        """Evaluate with the memo; report each case to the trial; stop as soon as the pruner says so. Cases
        already in flight when the trial is pruned are still awaited, recorded and cached (they are paid)."""
        key = cand.key
        results: list[CaseResult] = []
        todo: list[Case] = []

        def take(r: CaseResult) -> bool:
            results.append(r)
            if trial is not None and r.score is not None:
                trial.report(r.score, self.index[r.case_id])
                return trial.should_prune()
            return False

        for c in cases:
            hit = self.memo.get((key, split_name, c.id))
            if hit is not None and hit[0].error is None:
                if take(hit[0]):
                    return results, len(results) < len(cases)
            else:
                todo.append(c)
        stop = asyncio.Event()
        gen = iter_results(todo, cand.prompt, self.task, self.scorer, concurrency=self.config.concurrency,
                           stop=stop)
        async with contextlib.aclosing(gen):
            async for r in gen:
                if r.budget_exhausted:
                    self.out_of_budget = True
                    continue
                if r.error is None:
                    self.memo[(key, split_name, r.case_id)] = (r, r.calls)
                if self.store is not None:
                    self.store.add_eval(key, split_name, r, r.calls)
                self.on_event("case", {"split": split_name, "candidate": cand.id, "score": r.score,
                                       "case_id": r.case_id, "output": r.output[:300] or (r.error or "")[:300]})
                if not stop.is_set() and take(r):
                    stop.set()
        # pruned on its very last case: every case is scored, so it is a complete candidate
        return results, stop.is_set() and len({x.case_id for x in results}) < len(cases)

    async def diagnosis(self, parent: Candidate) -> tuple[Diagnosis, list[CaseResult]]:
        if parent.key in self.diagnoses:
            return self.diagnoses[parent.key]
        sample = list(self.splits.train[: self.config.diagnose_sample])
        results, _ = await self.evaluate(parent, sample, "train")
        failing = [r for r in results if r.passed is False]
        before = self.reasoner.meter.calls
        diag = await diagnose(self.reasoner, parent.prompt, failing)
        self._log("diagnosis", candidate=parent.id, source=diag.source, calls=self.reasoner.meter.calls - before,
                  categories=[c.__dict__ for c in diag.categories])
        self.diagnoses[parent.key] = (diag, failing)
        return diag, failing

    # ----------------------------------------------------------------- trial
    async def _heartbeat(self, trial: Trial) -> None:
        while True:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(trial.heartbeat)
            await asyncio.sleep(HEARTBEAT_S)

    async def step(self, pool: list[Candidate]) -> Candidate | None:
        """Run one trial. None when the study already has `max_trials` trials (another worker took the last)."""
        full = [c for c in pool if c.state == "complete" and len(c.val) == len(self.val)]
        best = max(full, key=lambda c: c.val_mean) if full else None  # pruned against; a parent half the time
        trial = self.search.ask(best={self.index[k]: v for k, v in best.val.items()} if best else None)
        earlier = sum(1 for t in self.search.records() if t.number < trial.number and counts_as_trial(t))
        if earlier >= self.config.budget.trial_limit:
            trial.set_attr("skipped", "max trials reached")
            self.search.tell(trial, None, failed=True)
            return None
        beat = asyncio.ensure_future(self._heartbeat(trial))
        try:
            return await self._step(trial, pool, best)
        finally:
            beat.cancel()

    async def _step(self, trial: Trial, pool: list[Candidate], best: Candidate | None) -> Candidate:
        # every random choice of a trial comes from the seed and the trial number: the same seed, data and
        # models give the same run, and a resumed run makes the choices an uninterrupted one would have made
        rng = random.Random(f"{self.config.seed}-{trial.number}")
        ops, history = self.operators(pool)
        self._note_reasoner(history)
        op = choose(ops, history, rng)
        # half the trials build on the best prompt so far (each operator changes one thing, so gains compose);
        # the other half on a parent from the per-case Pareto front (prompts best on some case: diversity)
        parent = best if best is not None and rng.random() < 0.5 else pareto_parent(pool, rng)
        first = not any(h.operator == op for h in history)
        # half the later demos trials keep the shape of the parent's demos and draw other examples
        around = demo_shape(parent, pool) if op == "demos" and not first and rng.random() < 0.5 else None
        if self.redraw is not None:  # after patience (stop_reason): other demos for the accepted best
            op, parent, first = "demos", self.redraw, False
            around = demo_shape(parent, pool)
        params = trial.suggest(op, n_train=len(self.splits.train), n_labels=len(self.facts.labels),
                               first=first, around=around)
        if self.redraw is not None:
            params["redraw"] = True
        params.setdefault("phrasing", trial.number)  # for an LLM rewrite that falls back to `instruct`
        if len(parent.val) == len(self.val):
            trial.gate_on({self.index[k]: v for k, v in parent.val.items()})
        diag: Diagnosis = Diagnosis()
        failing: list[CaseResult] = []
        if get(op).needs_diagnosis:
            diag, failing = await self.diagnosis(parent)
        others = [c for c in pool if c.state == "complete" and c is not parent]
        other = rng.choice(others).prompt if others else None
        before = self.reasoner.meter.calls
        prompt, prop = await propose(params, parent.prompt, train=self.splits.train, facts=self.facts,
                                     reasoner=self.reasoner, diagnosis=diag, failing=failing, other=other)
        known = {c.key for c in pool}
        for attempt in range(1, 5):  # a no-LLM operator that rebuilt a known prompt: try its other settings
            if prop.operator in LLM_OPERATORS or Candidate("x", prompt).key not in known:
                break
            alt = vary({**params, "operator": prop.operator}, attempt, parent.prompt)
            prompt2, prop2 = await propose(alt, parent.prompt, train=self.splits.train, facts=self.facts,
                                           reasoner=None, diagnosis=diag, failing=failing, other=other)
            params.update({k: v for k, v in alt.items() if k != "operator"})
            prompt = prompt2
            prop = replace(prop2, reasoning=(prop.reasoning + " | " if prop.fallback else "") + prop2.reasoning,
                           fallback=prop.fallback, reasoning_calls=prop.reasoning_calls)
        self._log("proposal", trial=trial.number, operator=op, used=prop.operator, fallback=prop.fallback,
                  calls=self.reasoner.meter.calls - before)
        cand = Candidate(f"t{trial.number}", prompt, prop.operator, parent.id, prop.reasoning,
                         {k: v for k, v in params.items() if k != "operator"}, trial=trial.number,
                         fallback=prop.fallback, worker=self.worker, asked=op)
        self.on_event("trial_start", {"n": trial.number, "candidate": cand.id, "operator": cand.operator,
                                      "parent": parent.id})
        dup = next((c for c in pool if c.key == cand.key and c.state == "complete"), None)
        if dup is not None:  # the same prompt again: its scores are known, no calls
            for cid, v in dup.val.items():
                trial.report(v, self.index[cid])
            cand = cand.scored(dup.val, State.DUPLICATE)
            self.finish(trial, cand, dup.val_mean)
            return cand
        order = list(self.val)
        random.Random(self.config.seed * 100_003 + trial.number).shuffle(order)
        results, pruned = await self.evaluate(cand, order, "val", trial)
        val = {r.case_id: r.score for r in results if r.score is not None}
        if not val:
            state = State.FAILED
        elif pruned:
            state = State.PRUNED
        elif len(val) < len(self.val) and self.out_of_budget:
            state = State.INCOMPLETE
        else:
            state = State.COMPLETE
        cand = cand.scored(val, state)
        if state == State.PRUNED:
            cand = replace(cand, pruned_by=trial.pruned_by)
        self.finish(trial, cand, cand.val_mean if cand.val else None)
        self._note_reasoner(outcomes([*pool, cand]))
        return cand

    def finish(self, trial: Trial, cand: Candidate, value: float | None) -> None:
        failed = cand.state in ("failed", "incomplete")
        self.search.tell(trial, None if failed else value, pruned=cand.state == "pruned", failed=failed,
                         attrs=cand.attrs())
        if self.store is not None:
            self.store.save_candidate(cand.record(), cand.prompt.to_markdown())
