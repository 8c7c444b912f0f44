"""The reflex strategy (the default), which owns its loop: one Optuna trial per candidate; per trial, an
operator chosen by the policy in operators.py, a parent (the best so far, or one from the per-case Pareto front
on val), a diagnosis when the operator needs one, a proposal, and an evaluation on val in shuffled order with a
gate against the parent and pruning against the best. Patience, demo draws on the best after patience, an
exhausted search space and the trial limit end it. Other processes (`reflexopt worker`) run the same loop on
the same study.

A candidate is a set of named prompts; each trial changes one of them (the only one for a prompt file; in turn
by trial number when there are several), so the operators see one prompt at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..diagnose import Diagnosis, diagnose
from ..operators import LLM_OPERATORS, Outcome, available, choose, get, reasoner_ok, untried
from ..pool import (
    Candidate,
    Selection,
    State,
    case_scores,
    collapsed,
    counts_as_trial,
    from_study,
    gates,
    outcomes,
    pareto_parent,
    select,
)
from ..propose import propose, vary
from ..pruning import collapse
from ..search import DEMO_KNOBS, GRACE_S, HEARTBEAT_S, StudyState

if TYPE_CHECKING:
    from ..evaluate import CaseResult
    from ..search import Trial, TrialRecord
    from .base import SearchContext


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


class ReflexStrategy:
    name = "reflex"
    distributed = True

    def __init__(self) -> None:
        self.diagnoses: dict[str, tuple[Diagnosis, list[CaseResult]]] = {}
        self.reasoner_given_up = False
        self.redraw: Candidate | None = None  # set by stop_reason: the next trial draws other demos for it
        self.asks: dict[tuple[str, str, str], int] = {}  # (LLM operator, parent, prompt name) -> times asked
        self.draws_stopped_on: set[str] = set()  # bests whose draws after patience kept collapsing (noted once)

    async def search(self, ctx: SearchContext) -> str:
        search = ctx.search
        records = search.records()
        pool = from_study(records, ctx.val)
        sel = select(pool, len(ctx.val), ctx.min_gain)
        while True:
            if ctx.config.storage is not None and search.fail_stale():  # a dead worker's trial holds no slot
                records = search.records()
            stop = self.stop_reason(ctx, records, sel, pool)
            if stop == "max trials" and await self._slot_freed(ctx):
                records = search.records()  # a dead worker's trial held a slot: run one in its place
                continue
            if stop:
                return stop
            cand = await self.step(ctx, pool)
            if cand is None:
                if await self._slot_freed(ctx):
                    records = search.records()
                    continue
                return "max trials"
            records = search.records()  # one read per trial (step reads again at ask, for the trial limit)
            pool = from_study(records, ctx.val)
            sel = ctx.after_trial(cand, sel, records=records)

    async def _slot_freed(self, ctx: SearchContext) -> bool:
        """At the trial limit with trials of other processes still running (a shared study): wait for them. True
        when one of them turned out dead (no heartbeat for the grace period) and was failed, so its slot is free
        again; False when they all finished (the limit is met) or the run ends meanwhile."""
        if ctx.config.storage is None:
            return False
        search = ctx.search
        deadline = time.monotonic() + GRACE_S + 2 * HEARTBEAT_S
        while time.monotonic() < deadline:
            running = [t for t in search.records() if t.state == StudyState.RUNNING and counts_as_trial(t)]
            if not running:
                return False
            if search.fail_stale():
                return True
            await asyncio.sleep(1.0)
        return False

    # ------------------------------------------------------------ policy
    def operators(self, ctx: SearchContext, pool: Sequence[Candidate]) -> tuple[tuple[str, ...], list[Outcome]]:
        """The operators available now and the history the policy learns from (no side effect). The reasoning
        model's operators are dropped once its rewrites keep being unusable."""
        history = outcomes(pool)
        train = ctx.train
        ops = available(categorical=ctx.facts.categorical, has_references=any(c.ideal for c in train),
                        has_train=bool(train), reasoner=ctx.config.rewrites, reasoner_healthy=reasoner_ok(history),
                        renders=ctx.renders, form=ctx.facts.form, allowed=ctx.allowed)
        return ops, history

    def _note_reasoner(self, ctx: SearchContext, history: Sequence[Outcome]) -> None:
        """Say once, in the log and as a note, that the reasoning model is no longer asked."""
        if self.reasoner_given_up or reasoner_ok(history):
            return
        self.reasoner_given_up = True
        asked = [h for h in history if h.asked_llm]
        why = (f"{sum(h.llm_usable for h in asked)} of {len(asked)} rewrites by the reasoning model were usable; "
               "it is not asked again in this run")
        ctx.emit("reasoner_given_up", {"reason": why})
        ctx.emit("note", {"message": why})

    def collapsing(self, draws: Sequence[Candidate], patience: int, ctx: SearchContext) -> bool:
        """True when the last `patience` demo draws on the best (after patience) were each stopped at their first
        check as collapsed (one label, already known to the run as a constant answer, to every case checked): the
        best's demos keep the model on one label whatever examples they show, and more draws cannot pay. The search then
        goes on with its own policy (said once per best); an accepted gain brings the draws back."""
        tail = draws[-patience:]
        if patience <= 0 or len(tail) < patience or any(c.pruned_by != "collapsed" for c in tail):
            return False
        best = tail[0].parent or ""
        if best not in self.draws_stopped_on:
            self.draws_stopped_on.add(best)
            why = (f"{patience} demo draws on the best ({best}) answered one label to every case checked; the search "
                   "goes on with its other operators instead")
            ctx.emit("draws_stopped", {"best": best, "reason": why})
            ctx.emit("note", {"message": why})
        return True

    def stop_reason(self, ctx: SearchContext, records: Sequence[TrialRecord], sel: Selection,
                    pool: Sequence[Candidate] = ()) -> str:
        """Why the search should stop now ('' to go on): the limits every strategy obeys, then patience, an
        exhausted search space and the trial limit (all numbers from the run's budget). Patience does not stop
        the search while an available operator family is still untried."""
        limit = ctx.stop_reason(sel)
        if limit:
            return limit
        budget = ctx.budget
        patience = budget.limits.patience
        if budget.remaining() < len(ctx.val) * ctx.calls_per_case:
            return "budget"  # too little left to score a candidate on all of val: it could never be accepted
        self.redraw = None
        if budget.patience_spent(sel.since_gain) and not (pool and untried(*self.operators(ctx, pool))):
            # patience is out: before stopping, more trials draw other demos for the best prompt (a gated draw
            # costs about 15 calls; demo sets are where small models gain most, and an accepted draw resumes the
            # whole search). How many: `patience` of them, or, when the run has a call, cost or time budget, as
            # many as it pays for (the budget check above ends them): calls the user gave are spent where they
            # can still pay, not left unspent; but not while they keep answering one label to every case
            # (collapsing): then the search goes on with its own policy
            if not pool or "demos" not in self.operators(ctx, pool)[0]:
                return f"no accepted gain in {patience} trials"
            last = next(i for i, c in enumerate(pool) if c.id == sel.accepted[-1])
            draws = [c for c in pool[last + 1:] if c.params.get("redraw")]
            if not budget.sized() and len(draws) >= patience:
                return f"no accepted gain in {patience} trials, then in {patience} demo draws on the best"
            if not self.collapsing(draws, patience, ctx):
                self.redraw = sel.best
        tail = [c.state for c in pool if c.id != "baseline"][-2 * patience:]
        if len(tail) == 2 * patience and all(s == State.DUPLICATE for s in tail):
            return "search space exhausted (only known prompts came back)"
        if budget.trials_spent(sum(1 for t in records if counts_as_trial(t))):
            return "max trials"
        return ""

    # ------------------------------------------------------------ one trial
    async def diagnosis(self, ctx: SearchContext, parent: Candidate,
                        target: str) -> tuple[Diagnosis, list[CaseResult]]:
        if parent.key in self.diagnoses:
            return self.diagnoses[parent.key]
        sample = list(ctx.train[: ctx.config.diagnose_sample])
        results, _ = await ctx.evaluate(parent, sample, "train")
        failing = [r for r in results if r.passed is False]
        before = ctx.reasoner.meter.calls
        diag = await diagnose(ctx.reasoner, parent.prompts[target], failing,
                              free_text=not ctx.facts.categorical)
        ctx.emit("diagnosis", {"candidate": parent.id, "source": diag.source,
                               "calls": ctx.reasoner.meter.calls - before,
                               "categories": [c.__dict__ for c in diag.categories]})
        self.diagnoses[parent.key] = (diag, failing)
        return diag, failing

    @staticmethod
    async def below_constant(ctx: SearchContext, pool: Sequence[Candidate], history: Sequence[Outcome]) -> bool:
        """Whether this trial is the run's one demo set with the labels' train shares (space.suggest's `prior`):
        once the first demos trial is done, while every candidate scores below a constant answer on val (one
        that ties it already has what such a demo set would give, the constant answer's score). The first
        demo set shows every label alike; where the task model cannot tell the cases apart, its answers then
        follow the demos' mix and miss the majority's share, which a demo set carrying the prior keeps
        (scripts/results/dev_imbalanced.md)."""
        if not ctx.facts.categorical or not any(h.operator == "demos" for h in history):
            return False
        if any(c.params.get("demo_pick") == "prior" for c in pool):
            return False
        bar = await ctx.constant_val()
        top = max((c.val_mean for c in pool if c.state == State.COMPLETE and len(c.val) == len(ctx.val)),
                  default=0.0)
        return bar is not None and top < bar

    async def _heartbeat(self, trial: Trial) -> None:
        while True:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(trial.heartbeat)
            await asyncio.sleep(HEARTBEAT_S)

    async def step(self, ctx: SearchContext, pool: list[Candidate]) -> Candidate | None:
        """Run one trial. None when the study already has `max_trials` trials (another worker took the last)."""
        full = [c for c in pool if c.state == State.COMPLETE and len(c.val) == len(ctx.val)]
        best = max(full, key=lambda c: c.val_mean) if full else None  # pruned against: the bar to beat
        trial = ctx.search.ask(best={ctx.index[k]: v for k, v in best.val.items()} if best else None)
        earlier = sum(1 for t in ctx.search.records() if t.number < trial.number and counts_as_trial(t))
        if ctx.budget.trials_spent(earlier):
            trial.set_attr("skipped", "max trials reached")
            ctx.search.tell(trial, None, failed=True)
            return None
        # a parent half the time: the best prompt that tells the cases apart. One that answers one label whatever
        # the case (collapsed) may still be the bar, but what is built on it mostly answers the same label
        varied = [c for c in full if not collapsed(c)]
        lead = max(varied, key=lambda c: c.val_mean) if varied else best
        beat = asyncio.ensure_future(self._heartbeat(trial))
        try:
            return await self._step(ctx, trial, pool, lead)
        finally:
            beat.cancel()

    async def _step(self, ctx: SearchContext, trial: Trial, pool: list[Candidate],
                    best: Candidate | None) -> Candidate:
        # every random choice of a trial comes from the seed and the trial number: the same seed, data and
        # models give the same run, and a resumed run makes the choices an uninterrupted one would have made
        rng = random.Random(f"{ctx.config.seed}-{trial.number}")
        ops, history = self.operators(ctx, pool)
        self._note_reasoner(ctx, history)
        op = choose(ops, history, rng)
        # half the trials build on the best prompt so far (each operator changes one thing, so gains compose);
        # the other half on a parent from the per-case Pareto front (prompts best on some case: diversity)
        parent = best if best is not None and rng.random() < 0.5 else pareto_parent(pool, rng)
        names = parent.prompts.names
        target = names[trial.number % len(names)]  # the named prompt this trial changes
        first = not any(h.operator == op for h in history)
        # half the later demos trials keep the shape of the parent's demos and draw other examples
        around = demo_shape(parent, pool) if op == "demos" and not first and rng.random() < 0.5 else None
        prior = False
        if self.redraw is not None:  # after patience (stop_reason): other demos for the accepted best
            op, parent, first = "demos", self.redraw, False
            around = demo_shape(parent, pool)
        elif await self.below_constant(ctx, pool, history):
            op, parent, first, around, prior = "demos", best or parent, False, None, True
        params = trial.suggest(op, n_train=len(ctx.train), n_labels=len(ctx.facts.labels),
                               first=first, around=around, prior=prior)
        if self.redraw is not None:
            params["redraw"] = True
        params.setdefault("phrasing", trial.number)  # for an LLM rewrite that falls back to `instruct`
        if len(names) > 1:
            params["target"] = target
        if gates(parent, len(ctx.val)):
            trial.gate_on({ctx.index[k]: v for k, v in parent.val.items()}, ctx.noise)
        constant = {c.params["collapsed"]["label"] for c in pool if c.state == State.COMPLETE
                    and collapsed(c)}
        if ctx.facts.categorical and constant:  # a second constant answer is stopped at the first check
            trial.collapse_on(ctx.facts.labels, {ctx.index[c.id]: c.ideal for c in ctx.val}, constant)
        diag: Diagnosis = Diagnosis()
        failing: list[CaseResult] = []
        if get(op).needs_diagnosis:
            diag, failing = await self.diagnosis(ctx, parent, target)
        others = [c for c in pool if c.state == State.COMPLETE and c is not parent]
        other = rng.choice(others).prompts[target] if others else None
        before = ctx.reasoner.meter.calls
        base = parent.prompts[target]
        ask = (op, parent.key, target)
        sample = self.asks.get(ask, 0)  # the same rewrite asked again is a new draw, not the cached reply
        self.asks[ask] = sample + 1
        prompt, prop = await propose(params, base, train=ctx.train, facts=ctx.facts, reasoner=ctx.reasoner,
                                     diagnosis=diag, failing=failing, other=other, sample=sample)
        known = {c.key for c in pool}
        for attempt in range(1, 5):  # a no-LLM operator that rebuilt a known prompt: try its other settings
            if prop.operator in LLM_OPERATORS or parent.prompts.replace(target, prompt).key not in known:
                break
            alt = vary({**params, "operator": prop.operator}, attempt, base)
            prompt2, prop2 = await propose(alt, base, train=ctx.train, facts=ctx.facts, reasoner=None,
                                           diagnosis=diag, failing=failing, other=other)
            params.update({k: v for k, v in alt.items() if k != "operator"})
            prompt = prompt2
            prop = replace(prop2, reasoning=(prop.reasoning + " | " if prop.fallback else "") + prop2.reasoning,
                           fallback=prop.fallback, reasoning_calls=prop.reasoning_calls)
        ctx.emit("proposal", {"trial": trial.number, "operator": op, "used": prop.operator,
                              "fallback": prop.fallback, "calls": ctx.reasoner.meter.calls - before})
        cand = Candidate(f"t{trial.number}", parent.prompts.replace(target, prompt), prop.operator, parent.id,
                         prop.reasoning, {k: v for k, v in params.items() if k != "operator"}, trial=trial.number,
                         fallback=prop.fallback, worker=ctx.worker, asked=op)
        ctx.emit("trial_start", {"n": trial.number, "candidate": cand.id, "operator": cand.operator,
                                 "parent": parent.id})
        dup = next((c for c in pool if c.key == cand.key and c.state == State.COMPLETE), None)
        if dup is not None:  # the same prompt again: its scores are known, no calls
            for cid, v in dup.val.items():
                trial.report(v, ctx.index[cid])
            seen = {"collapsed": dup.params["collapsed"]} if "collapsed" in dup.params else {}
            cand = replace(cand.scored(dup.val, State.DUPLICATE),
                           params={**cand.params, **seen, "duplicate_of": dup.id})
            ctx.finish(trial, cand, dup.val_mean)
            return cand
        order = list(ctx.val)
        random.Random(ctx.config.seed * 100_003 + trial.number).shuffle(order)
        results, pruned = await ctx.evaluate(cand, order, "val", trial)
        val = case_scores(results)
        if not val:
            state = State.FAILED
        elif pruned:
            state = State.PRUNED
        elif len(val) < len(ctx.val) and ctx.budget.exhausted():
            state = State.INCOMPLETE
        else:
            state = State.COMPLETE
        cand = cand.scored(val, state)
        if state == State.COMPLETE and ctx.facts.categorical:
            hit = collapse({ctx.index[r.case_id]: r.output for r in results if r.score is not None},
                           {ctx.index[c.id]: c.ideal for c in ctx.val}, ctx.facts.labels)
            if hit is not None:  # kept: it may be the bar, but it is not built on, and its like is stopped early
                cand = replace(cand, params={**cand.params, "collapsed": hit})
        if state == State.PRUNED:
            cand = replace(cand, pruned_by=trial.pruned_by)
            if trial.collapsed is not None:
                cand = replace(cand, params={**cand.params, "collapsed": trial.collapsed})
        ctx.finish(trial, cand, cand.val_mean if cand.val else None)
        self._note_reasoner(ctx, outcomes([*pool, cand]))
        return cand
