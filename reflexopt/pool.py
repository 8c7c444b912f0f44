"""Candidates and the pool they form: rebuilt from the study, Pareto parents, and honest selection."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property
from typing import Any, TypeVar

from .data import Case
from .evaluate import case_scores as case_scores  # a candidate's val: the rule is evaluate's, used here
from .operators import LLM_OPERATORS, NAMES, Outcome
from .prompt import Prompt
from .promptset import PromptSet
from .search import StudyState, TrialRecord


class State(str, Enum):
    """A candidate's state (a str, so stored records and JSON keep the plain names)."""

    RUNNING = "running"
    COMPLETE = "complete"  # scored on all of val
    PRUNED = "pruned"  # stopped early by the pruner: significantly worse than the best
    DUPLICATE = "duplicate"  # renders like a known candidate: its scores are reused, no calls
    FAILED = "failed"  # no case could be scored
    INCOMPLETE = "incomplete"  # the budget ran out part-way through val

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Candidate:
    """One candidate tried in a run: a set of named prompts (one, named `prompt`, for a prompt file). Frozen:
    scoring makes a new record with `scored(...)`. A Prompt given as `prompts` is the set of that one prompt."""

    id: str
    prompts: PromptSet
    operator: str = "baseline"
    parent: str | None = None
    reasoning: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    state: State = State.RUNNING
    trial: int | None = None
    fallback: bool = False
    worker: str = ""
    asked: str = ""  # the operator the policy asked for (differs from `operator` when an LLM rewrite fell back)
    pruned_by: str = ""  # why a pruned candidate was stopped: "gate" or "worse than best"

    def __post_init__(self) -> None:
        if not isinstance(self.prompts, PromptSet):
            object.__setattr__(self, "prompts", PromptSet.of(self.prompts))

    @property
    def prompt(self) -> Prompt:
        """The primary prompt (the only one for a prompt file)."""
        return self.prompts.primary

    def scored(self, val: dict[str, float], state: State) -> Candidate:
        """This candidate with its val scores and final state."""
        return replace(self, val=dict(val), state=state)

    @property
    def key(self) -> str:
        return self.prompts.key

    @cached_property
    def val_mean(self) -> float:  # computed once: a candidate is frozen, and the pool asks for it every trial
        return sum(self.val.values()) / len(self.val) if self.val else float("nan")

    def scores_on(self, case_ids: tuple[str, ...]) -> Any:
        """This candidate's val scores on `case_ids` as a numpy row (-1 where unscored), kept for the last
        `case_ids` asked: the Pareto front is recomputed every trial over every earlier candidate."""
        hit = self.__dict__.get("_scores_on")
        if hit is None or hit[0] != case_ids:
            import numpy as np

            hit = self.__dict__["_scores_on"] = (case_ids, np.array([self.val.get(i, -1.0) for i in case_ids]))
        return hit[1]

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "operator": self.operator, "parent": self.parent,
                "reasoning": self.reasoning[:2000], "params": self.params, "state": self.state, "trial": self.trial,
                "val_mean": None if not self.val else round(self.val_mean, 6), "n_val": len(self.val),
                "fallback": self.fallback, "worker": self.worker, "asked": self.asked or self.operator,
                "pruned_by": self.pruned_by}

    def attrs(self) -> dict[str, Any]:
        """What the study keeps about this candidate (so any process can rebuild it)."""
        return {"candidate": self.id, "key": self.key, "prompt": self.prompts.to_markdown(), "operator": self.operator,
                "parent": self.parent, "reasoning": self.reasoning[:2000], "fallback": self.fallback,
                "worker": self.worker, "state": self.state, "asked": self.asked or self.operator,
                "pruned_by": self.pruned_by, "params": self.params}


_STATES = {StudyState.COMPLETE: State.COMPLETE, StudyState.PRUNED: State.PRUNED}


def counts_as_trial(r: TrialRecord) -> bool:
    """Trials that use up --max-trials: finished or running candidates, and candidates that failed on their own;
    not the baseline, not trials skipped at the limit, not trials of a process that died (stale)."""
    if r.attrs.get("candidate") == "baseline" or "skipped" in r.attrs:
        return False
    return (r.state in (StudyState.COMPLETE, StudyState.PRUNED, StudyState.RUNNING)
            or r.attrs.get("state") in (State.FAILED, State.INCOMPLETE))


_BUILT: dict[int, tuple[TrialRecord, Sequence[Case], Candidate]] = {}


def from_study(records: Sequence[TrialRecord], val: Sequence[Case]) -> list[Candidate]:
    """Every finished candidate in trial order, with its per-case val scores. A record seen before (the same
    object, which `Search.records` reuses for finished trials) gives the candidate built then."""
    out = []
    for r in sorted(records, key=lambda r: r.number):
        if r.state not in _STATES or "prompt" not in r.attrs:
            continue
        hit = _BUILT.get(id(r))  # the entry holds r and val: their ids cannot be reused while it exists
        if hit is not None and hit[0] is r and hit[1] is val:
            out.append(hit[2])
            continue
        state = State.DUPLICATE if r.attrs.get("state") == State.DUPLICATE else _STATES[r.state]
        scores = {val[i].id: v for i, v in r.steps.items() if 0 <= i < len(val)}
        # the settings the candidate was built with (TPE's and the fixed ones); older studies kept TPE's only
        params = r.attrs.get("params")
        params = dict(params if isinstance(params, dict) else r.params)
        out.append(Candidate(str(r.attrs["candidate"]), _parsed(str(r.attrs["prompt"]), str(r.attrs["candidate"])),
                             str(r.attrs.get("operator", "")), r.attrs.get("parent"), str(r.attrs.get("reasoning", "")),
                             params, scores, state, r.number, bool(r.attrs.get("fallback")),
                             str(r.attrs.get("worker", "")), str(r.attrs.get("asked", "")),
                             str(r.attrs.get("pruned_by", ""))))
        if len(_BUILT) > 50_000:
            _BUILT.clear()
        _BUILT[id(r)] = (r, val, out[-1])
    return out


_PARSED: dict[tuple[str, str], PromptSet] = {}


def _parsed(markdown: str, source: str) -> PromptSet:
    """Parse each stored candidate once per process: the pool is rebuilt after every trial, and re-parsing every
    earlier candidate's front matter made each trial slower than the one before."""
    key = (markdown, source)
    hit = _PARSED.get(key)
    if hit is None:
        if len(_PARSED) > 20_000:
            _PARSED.clear()
        hit = _PARSED[key] = PromptSet.parse(markdown, source)
    return hit


def outcomes(pool: Sequence[Candidate]) -> list[Outcome]:
    """What each finished trial says about its operator, for the operator policy (operators.choose)."""
    by_id = {c.id: c for c in pool}
    out = []
    for c in pool:
        if c.id == "baseline" or c.trial is None:
            continue
        parent = by_id.get(c.parent or "")
        hit = c.__dict__.get("_outcome")  # both candidates are frozen: the same pair gives the same outcome
        if hit is None or hit[0] is not parent:
            improved = (c.state == "complete" and parent is not None and bool(parent.val)
                        and c.val_mean > parent.val_mean)
            asked = c.asked or c.operator
            hit = c.__dict__["_outcome"] = (parent, Outcome(c.operator, asked, asked_llm=asked in LLM_OPERATORS,
                                                            llm_usable=asked in LLM_OPERATORS and not c.fallback,
                                                            improved=improved))
        out.append(hit[1])
    return out


@dataclass(frozen=True)
class Selection:
    best: Candidate
    since_gain: int  # trials after the last accepted gain
    trials: int  # finished trials, baseline excluded
    pruned: int
    accepted: tuple[str, ...]  # the accepted path, in order


def select(pool: Sequence[Candidate], n_val: int, min_gain: float) -> Selection:
    """Walk the trials in order; a candidate is accepted only when it is fully evaluated on val and beats the
    current best by more than noise explains. With exact scores (`min_gain` 0) any gain counts. With a noisy judge
    (`min_gain` > 0: twice the standard error its redraw noise gives over val) the gain must clear twice the
    standard error of the per-case differences from the best (stats.paired_gain_bar), which counts only the cases
    whose verdict moved. A demo draw made after patience ran out (`redraw`) is accepted as any other step is: the
    one-case margin draws had held back a step that paid on held-back dev rows, and the accepted steps after a
    run's first, weakly supported ones included, paid there on average (scripts/results/path_holdout.md). A
    candidate that varies its answers takes the place of a best that answers one label when it scores above it on
    val (varies_past). The baseline is the first best: never a regression."""
    base = next(c for c in pool if c.id == "baseline")
    best, since, trials, pruned, path = base, 0, 0, 0, ["baseline"]
    for c in pool:
        if c.id == "baseline":
            continue
        trials += 1
        pruned += c.state == "pruned"
        if c.state == "complete" and len(c.val) == n_val and (varies_past(c, best)
                                                              or _gains(c, best, min_gain)):
            best, since = c, 0
            path.append(c.id)
            continue
        if c.state != "duplicate":  # a prompt already known cost nothing and says nothing new
            since += 1
    return Selection(best, since, trials, pruned, tuple(path))


def _gains(c: Candidate, best: Candidate, min_gain: float) -> bool:
    """`c`'s val mean beats the best's by more than the margins of select."""
    if c.val_mean <= best.val_mean:
        return False
    from .stats import paired_gain_bar

    margin = paired_gain_bar(c.val, best.val) if min_gain > 0 else 0.0
    return c.val_mean > best.val_mean + margin


def held_back(pool: Sequence[Candidate], best: Candidate, n_val: int, min_gain: float,
              limit: int = 5) -> list[dict[str, Any]]:
    """The candidates scored on all of val whose val mean is above the returned best's but that a noisy judge's
    gain bar kept out (select: a gain must clear twice the standard error of the per-case differences), highest
    first, each with the score it needed against the best: gains of a case or two on a small val split that more
    cases could confirm or undo (scripts/results/probe_third_rewrites.md). Empty with exact scores, where any gain
    counts, and for a candidate that answers one label."""
    if min_gain <= 0:
        return []
    from .stats import paired_gain_bar

    above = sorted((c for c in pool if c.id not in ("baseline", best.id) and c.state == State.COMPLETE
                    and len(c.val) == n_val and not collapsed(c) and c.val_mean > best.val_mean),
                   key=lambda c: -c.val_mean)
    return [{"id": c.id, "operator": c.operator, "val": round(c.val_mean, 4),
             "needed": round(best.val_mean + paired_gain_bar(c.val, best.val), 4)} for c in above[:limit]]


def collapsed(c: Candidate) -> bool:
    """It answered one label whatever the case (pruning.collapse; marked on a label task only)."""
    return bool(c.params.get("collapsed"))


def varies_past(c: Candidate, best: Candidate) -> bool:
    """`c` tells the cases apart and the best does not, and scores above it on val: it takes the best's place
    without select's margins (with a noisy judge, a constant answer's score is no bar a varied prompt must clear
    by more). At the same score the constant answer stays: its val score is its label's share, which test
    repeats, while a varied prompt tied with it is the luckiest of many noisy draws (on labels_next's
    tweet_offensive, four varied prompts tied at the majority's share of val, and the one returned scored below
    that share on test). The search still builds on the best prompt that varies (ReflexStrategy.step)."""
    return collapsed(best) and not collapsed(c) and c.val_mean > best.val_mean


def gates(parent: Candidate, n_val: int) -> bool:
    """Whether a trial built on `parent` is screened against it at the first check (search.Trial.gate_on): when
    the parent is scored on all of val and varies its answers. Against a constant answer the first cases say how
    many of them carry its label, not whether the child does the task: a child that tells them apart goes on to
    the test against the best."""
    return len(parent.val) == n_val and not collapsed(parent)


T = TypeVar("T")


def lineage(by_id: Mapping[str, T], best: str, parent: Callable[[T], str | None]) -> list[T]:
    """The steps that made `best`: it and its ancestors by parent link, oldest first, from the starting prompt. Not
    the accepted path (the successive new bests): a candidate that was never a new best may be on the way, when a
    later one built on it (a parent from the Pareto front) was. For Candidates and for stored candidate records."""
    chain: list[T] = []
    cur: str | None = best
    seen: set[str] = set()
    while cur and cur in by_id and cur not in seen:
        seen.add(cur)
        chain.append(by_id[cur])
        cur = parent(by_id[cur])
    return chain[::-1]


def steps_to(pool: Sequence[Candidate], best: str, accepted: Sequence[str]) -> list[dict[str, Any]]:
    """The lineage of `best` without the starting prompt, as the result records it: each step's candidate,
    operator, whether the search accepted it as a new best, its val score, and whether the reasoning model wrote
    it (an LLM rewrite that ran, not one that fell back to a no-LLM operator)."""
    chain = lineage({c.id: c for c in pool}, best, lambda c: c.parent)
    return [step(c.id, c.operator, c.id in accepted, round(c.val_mean, 4) if c.val else None)
            for c in chain if c.id != "baseline"]


def step(cid: str, operator: str | None, accepted: bool, val: float | None) -> dict[str, Any]:
    """One step of a lineage as it is recorded (the result's `lineage`, a benchmark row's)."""
    # by_reasoning_model: None where the step is not one of reflex's operators (a DSPy strategy's compile)
    return {"id": cid, "operator": operator, "accepted": accepted, "val": val,
            "by_reasoning_model": operator in LLM_OPERATORS if operator in NAMES else None}


def steps_text(steps: Sequence[Mapping[str, Any]]) -> str:
    """`demos → format ✓ → induce (reasoning model) → format ✓ · 1 of 4 by the reasoning model`: the returned
    prompt's lineage, ✓ where the search accepted a step as a new best."""
    chain = " → ".join(f"{s['operator']}" + (" (reasoning model)" if s.get("by_reasoning_model") else "")
                       + (" ✓" if s.get("accepted") else "") for s in steps)
    if any(s.get("by_reasoning_model") is None for s in steps):  # a DSPy strategy's compile: no such count
        return chain
    return f"{chain} · {sum(1 for s in steps if s['by_reasoning_model'])} of {len(steps)} by the reasoning model"


def held_back_text(kept: list[dict[str, Any]], best_val: float) -> str:
    """The summary's and the report's "held back" line: candidates above the best on val that the judge's gain bar
    kept out (held_back)."""
    each = "; ".join(f"{k['id']} ({k['operator']}) {k['val']:.3f}, needed {k['needed']:.3f}" for k in kept)
    return (f"{each}: above the best's {best_val:.3f} on val by less than the judge's noise explains; a larger "
            "val split (or eval of their prompts in the run folder's candidates/) can tell")


def pareto_parent(pool: Sequence[Candidate], rng: random.Random) -> Candidate:
    """Sample a parent from the per-case Pareto front on val, weighted by the cases each is best on."""
    import numpy as np

    done = [c for c in pool if c.state == "complete" and c.val]
    ids = tuple(sorted(set().union(*(c.val.keys() for c in done))))
    scores = np.stack([c.scores_on(ids) for c in done])  # candidates x cases
    leads = scores == scores.max(axis=0)
    telling = leads.sum(axis=0) < len(done)  # cases everyone ties on say nothing
    wins = [int(w) for w in leads[:, telling].sum(axis=1)]
    front = [(c, w) for c, w in zip(done, wins) if w > 0] or [(max(done, key=lambda c: c.val_mean), 1)]
    return rng.choices([c for c, _ in front], weights=[w for _, w in front])[0]
