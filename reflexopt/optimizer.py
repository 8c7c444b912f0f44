"""The optimize loop: baseline, diagnose, propose, Optuna search with pruning, honest selection, final test.

Knows nothing of terminals: progress goes to an `on_event(kind, data)` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import OptimizeConfig
from .data import Case, Splits, load_dataset, split
from .diagnose import Diagnosis, diagnose
from .errors import ConfigError
from .evaluate import CaseResult, Scorer, iter_results, make_scorer, usage_of
from .models import Meter, ModelClient, get_client
from .prompt import Prompt, load_prompt, parse_prompt
from .propose import LLM_OPERATORS, TaskFacts, propose, task_facts
from .search import Search, Trial
from .stats import paired_compare
from .store import RunStore, prompt_key

Event = Callable[[str, dict[str, Any]], None]


class CallBudget:
    """Hard limits shared by every client of a run.

    Calls are counted when granted, and each call in flight is charged the most expensive call seen so far, so
    concurrency cannot overshoot. During the search a reserve (calls, and their cost at the average price so far)
    is kept back for the final test evaluation.
    """

    def __init__(self, max_calls: int | None, max_cost: float | None, *, prior_calls: int = 0,
                 prior_cost: float = 0.0) -> None:
        self.max_calls, self.max_cost = max_calls, max_cost
        self.granted = prior_calls
        self.prior_cost = prior_cost
        self.limit_calls = max_calls
        self.reserve_calls = 0
        self.inflight = 0
        self.meters: list[Meter] = []
        self._lock = threading.Lock()

    def set_reserve(self, calls: int) -> None:
        with self._lock:
            self.reserve_calls = calls
            self.limit_calls = None if self.max_calls is None else max(0, self.max_calls - calls)

    def spent_cost(self) -> float:
        return self.prior_cost + sum(m.cost_usd for m in self.meters)

    def _cost_ok(self) -> bool:
        if self.max_cost is None:
            return True
        paid = [m for m in self.meters if m.calls]
        worst = max((m.max_call_cost for m in self.meters), default=0.0)
        if not paid and self.inflight:
            return False  # the price of a call is unknown until the first one returns
        avg = sum(m.cost_usd for m in paid) / max(1, sum(m.calls for m in paid))
        return self.spent_cost() + worst * (self.inflight + 1) + avg * self.reserve_calls <= self.max_cost

    def allow(self, meter: Meter) -> bool:
        with self._lock:
            if self.limit_calls is not None and self.granted >= self.limit_calls:
                return False
            if not self._cost_ok():
                return False
            self.granted += 1
            self.inflight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.inflight = max(0, self.inflight - 1)

    def remaining(self) -> float:
        return math.inf if self.limit_calls is None else self.limit_calls - self.granted


@dataclass
class Candidate:
    id: str
    prompt: Prompt
    operator: str = "baseline"
    parent: str | None = None
    reasoning: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    state: str = "running"
    trial: int | None = None
    fallback: bool = False

    @property
    def key(self) -> str:
        return prompt_key(self.prompt.to_markdown())

    @property
    def val_mean(self) -> float:
        return sum(self.val.values()) / len(self.val) if self.val else float("nan")

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "operator": self.operator, "parent": self.parent,
                "reasoning": self.reasoning[:2000], "params": self.params, "state": self.state, "trial": self.trial,
                "val_mean": None if not self.val else round(self.val_mean, 6), "n_val": len(self.val),
                "fallback": self.fallback}


@dataclass(frozen=True)
class OptimizeResult:
    run_id: str
    run_dir: str
    baseline_val: float
    best_val: float
    baseline_test: float
    best_test: float
    delta_ci95: tuple[float, float]
    p_value: float
    significant: bool
    model_calls: int
    cached_calls: int
    cost_usd: float
    trials: int
    pruned_trials: int
    best_prompt_path: str
    best_candidate: str
    stop_reason: str
    judge_noise: float
    elapsed_s: float
    baseline_prompt: str
    best_prompt: str
    usage: dict[str, Any]
    test_wins: int = 0
    test_losses: int = 0

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["delta_ci95"] = list(self.delta_ci95)
        return d


def estimate(n_val: int, n_test: int, n_train_sample: int, max_trials: int, judged: bool) -> dict[str, Any]:
    """Rough call count for a run: pruning typically stops bad candidates early (assume 60% of val)."""
    per_case = 2 if judged else 1
    llm_share = len(LLM_OPERATORS) / 7
    search = int(max_trials * (0.6 * n_val * per_case + llm_share * (2 + 0.3 * n_train_sample * per_case)))
    total = n_val * per_case + search + 2 * n_test * per_case
    return {"calls_estimate": total, "calls_baseline": n_val * per_case, "calls_search": search,
            "calls_final_test": 2 * n_test * per_case}


class Optimizer:
    def __init__(self, config: OptimizeConfig, *, on_event: Event | None = None, resume: str | None = None,
                 run_dir: Path | None = None, dry_run: bool = False) -> None:
        self.on_event = on_event or (lambda kind, data: None)
        self.dry_run = dry_run
        if resume is not None or (run_dir is not None and (run_dir / "config.json").exists()):
            self.store = RunStore.open(resume or None, run_dir=run_dir)
            stored = OptimizeConfig.model_validate(self.store.config())
            self.config = stored.model_copy(update={"storage": config.storage or stored.storage})
            self.resumed = True
        else:
            data = config.data.model_copy(update={"path": str(Path(config.data.path).resolve())})
            self.config = config.model_copy(update={"data": data,
                                                    "prompt_path": str(Path(config.prompt_path).resolve())})
            self.store = None  # type: ignore[assignment]
            self._run_dir = run_dir
            self.resumed = False
        cfg = self.config
        self.cases = load_dataset(cfg.data.path, input_field=cfg.data.input_field, ideal_field=cfg.data.ideal_field)
        self.baseline_prompt = load_prompt(cfg.prompt_path) if not self.resumed else \
            parse_prompt(self.store.candidate_markdown("baseline"), "baseline")
        self.baseline_prompt.check_fields(self.cases)
        self.splits: Splits = split(self.cases, cfg.split, seed=cfg.seed)
        self.facts: TaskFacts = task_facts(self.splits.train)

    # ----------------------------------------------------------------- setup
    def estimate(self) -> dict[str, Any]:
        cfg = self.config
        est = estimate(len(self.splits.val), len(self.splits.test), min(cfg.diagnose_sample, len(self.splits.train)),
                       cfg.budget.max_trials, cfg.scorer.judge is not None)
        if cfg.budget.max_calls:
            est["calls_estimate"] = min(est["calls_estimate"], cfg.budget.max_calls)
        est.update(n_train=len(self.splits.train), n_val=len(self.splits.val), n_test=len(self.splits.test),
                   max_trials=cfg.budget.max_trials)
        est["cost_estimate_usd"] = self._cost_estimate(est["calls_estimate"])
        return est

    def _cost_estimate(self, calls: int) -> float | None:
        from .models.litellm_backend import price_per_token

        specs = [self.config.model] + ([self.config.scorer.judge] if self.config.scorer.judge else [])
        prices = [price_per_token(s.id) for s in specs]
        if any(p is None for p in prices):
            return None
        avg_in = sum(len(c.input_text) for c in self.cases) / len(self.cases) / 4 + len(self.baseline_prompt.text) / 4
        per = sum((p[0] * (avg_in + 200) + p[1] * 150) for p in prices if p) / len(prices)
        return round(per * calls, 4)

    def _setup(self) -> None:
        cfg = self.config
        self.task = get_client(cfg.model, role="task")
        self.scorer: Scorer
        self.scorer, note = make_scorer(cfg.scorer, self.splits.train + self.splits.val + self.splits.test)
        if note:
            self.on_event("note", {"message": note})
        # the reasoning model writes whole prompts: it does not inherit the task's completion limit
        self.reasoner: ModelClient = get_client(cfg.reasoning or cfg.model.model_copy(update={"max_tokens": None}),
                                                role="reasoning")
        if self.store is None:
            self.store = RunStore.create(cfg.public(), run_dir=self._run_dir)
            self.store.save_candidate(Candidate("baseline", self.baseline_prompt).record(),
                                      self.baseline_prompt.to_markdown())
        self.memo = self.store.evals()
        prior_calls = sum(calls for _, calls in self.memo.values()) + sum(
            int(e.get("calls", 0)) for e in self.store.events() if e["event"] in ("diagnosis", "proposal"))
        prior_cost = sum(r.cost_usd for r, _ in self.memo.values() if not r.cached)
        self.budget = CallBudget(cfg.budget.max_calls, cfg.budget.max_cost, prior_calls=prior_calls,
                                 prior_cost=prior_cost)
        self.clients = [self.task, self.reasoner] + ([self.scorer.client] if hasattr(self.scorer, "client") else [])
        for c in self.clients:
            c.gate = self.budget
            self.budget.meters.append(c.meter)
        storage = cfg.storage or self.store.storage_url()
        self.search = Search(storage, f"reflexopt-{self.store.run_id}", seed=cfg.seed, pruning=cfg.pruning)
        self.rng = random.Random(cfg.seed)
        self.diagnoses: dict[str, tuple[Diagnosis, list[CaseResult]]] = {}

    # ------------------------------------------------------------ evaluation
    async def _eval(self, cand: Candidate, cases: Sequence[Case], split_name: str, trial: Trial | None = None,
                    index: dict[str, int] | None = None) -> tuple[list[CaseResult], bool]:
        """Evaluate with memo (resume is free); report per case to the trial; stop when the pruner says so."""
        key = cand.key
        results: list[CaseResult] = []
        todo: list[Case] = []
        pruned = False

        def take(r: CaseResult) -> bool:
            results.append(r)
            if trial is not None and r.score is not None and index is not None:
                trial.report(r.score, index[r.case_id])
                return trial.should_prune()
            return False

        for c in cases:
            hit = self.memo.get((key, split_name, c.id))
            if hit is not None and hit[0].error is None:
                if take(hit[0]):
                    return results, True
            else:
                todo.append(c)
        gen = iter_results(todo, cand.prompt, self.task, self.scorer, concurrency=self.config.concurrency)
        async with contextlib.aclosing(gen):
            async for r in gen:
                if r.budget_exhausted:
                    self.out_of_budget = True
                    continue
                if r.error is None:
                    self.memo[(key, split_name, r.case_id)] = (r, r.calls)
                self.store.add_eval(key, split_name, r, r.calls)
                self.on_event("case", {"split": split_name, "candidate": cand.id, "score": r.score})
                if take(r):
                    pruned = True
                    break
        return results, pruned

    def _usage(self) -> dict[str, Any]:
        u = usage_of(*self.clients)
        u["budget_calls_used"] = self.budget.granted
        return u

    # ----------------------------------------------------------------- parts
    def _pareto_parent(self, pool: list[Candidate]) -> Candidate:
        """Sample a parent from the per-case Pareto front on val, weighted by the cases each is best on."""
        done = [c for c in pool if c.state == "complete" and c.val]
        ids = sorted(set().union(*(c.val.keys() for c in done)))
        wins: dict[str, int] = {c.id: 0 for c in done}
        for case_id in ids:
            scored = [(c.val.get(case_id, -1.0), c.id) for c in done]
            top = max(s for s, _ in scored)
            leaders = [cid for s, cid in scored if s == top]
            if len(leaders) < len(done):  # cases everyone ties on say nothing
                for cid in leaders:
                    wins[cid] += 1
        front = [c for c in done if wins[c.id] > 0] or [max(done, key=lambda c: c.val_mean)]
        weights = [wins[c.id] or 1 for c in front]
        return self.rng.choices(front, weights=weights)[0]

    async def _diagnosis(self, parent: Candidate) -> tuple[Diagnosis, list[CaseResult]]:
        if parent.key in self.diagnoses:
            return self.diagnoses[parent.key]
        sample = list(self.splits.train[: self.config.diagnose_sample])
        results, _ = await self._eval(parent, sample, "train")
        failing = [r for r in results if r.passed is False]
        before = self.reasoner.meter.calls
        diag = await diagnose(self.reasoner, parent.prompt, failing)
        self.store.event("diagnosis", candidate=parent.id, source=diag.source, calls=self.reasoner.meter.calls - before,
                         categories=[c.__dict__ for c in diag.categories])
        self.diagnoses[parent.key] = (diag, failing)
        return diag, failing

    async def _judge_noise(self, baseline: Candidate) -> float:
        """Per-case SD of re-judging the same outputs (0 for deterministic metrics)."""
        from .judge import JudgeScorer

        if not isinstance(self.scorer, JudgeScorer) or self.config.noise_sample == 0:
            return 0.0
        first = [r for (k, s, _), (r, _) in self.memo.items()
                 if k == baseline.key and s == "val" and r.score is not None][: self.config.noise_sample]
        by_id = {c.id: c for c in self.cases}
        scorer = self.scorer

        outs = await asyncio.gather(*(scorer.score(by_id[r.case_id], r.output, sample=1) for r in first))
        pairs = [(r.score, s.value) for r, s in zip(first, outs) if r.score is not None and s.value is not None]
        if len(pairs) < 2:
            return 0.0
        diffs = [a - b for a, b in pairs]
        sd = math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs)))  # SD of one judgement
        self.store.event("judge_noise", n=len(pairs), sd=sd)
        return sd

    # ------------------------------------------------------------------ loop
    def run(self) -> OptimizeResult:
        return asyncio.run(self.arun())

    async def arun(self) -> OptimizeResult:
        start = time.monotonic()
        self._setup()
        cfg, store = self.config, self.store
        self.out_of_budget = False
        val, test = list(self.splits.val), list(self.splits.test)
        index = {c.id: i for i, c in enumerate(val)}
        est = self.estimate()
        store.event("start", resumed=self.resumed, **est)
        self.on_event("start", {"run_id": store.run_id, "run_dir": str(store.root), "resumed": self.resumed, **est})
        self.budget.set_reserve(2 * len(test) * (2 if cfg.scorer.judge else 1))
        stale = self.search.fail_stale()
        if stale:
            store.event("stale_trials_failed", n=stale)

        # baseline
        self.on_event("phase", {"phase": "baseline"})
        baseline = Candidate("baseline", self.baseline_prompt, state="complete")
        res, _ = await self._eval(baseline, val, "val")
        baseline.val = {r.case_id: r.score for r in res if r.score is not None}
        if not baseline.val:
            raise ConfigError("the baseline prompt produced no scorable output on val (every call failed)",
                              fix=f"check the model and scorer; see {store.root / 'evals.jsonl'}")
        pool = [baseline]
        existing = {t.attrs.get("candidate"): t for t in self.search.trials()}
        if "baseline" not in existing:
            self.search.add_complete({}, baseline.val_mean, {index[k]: v for k, v in baseline.val.items()},
                                     {"candidate": "baseline", "key": baseline.key})
        noise = await self._judge_noise(baseline)
        min_gain = 2 * noise / math.sqrt(len(val)) if noise else 0.0
        best = baseline
        self.on_event("baseline", {"val": baseline.val_mean, "noise": noise, "min_gain": min_gain})

        # restore earlier trials (resume)
        since_gain, n_trials, n_pruned = 0, 0, 0
        for rec in sorted(store.candidates(), key=lambda r: (r.get("trial") is None, r.get("trial") or 0)):
            if rec["id"] == "baseline" or rec["state"] not in ("complete", "pruned"):
                continue
            c = Candidate(rec["id"], parse_prompt(store.candidate_markdown(rec["id"]), rec["id"]), rec["operator"],
                          rec["parent"], rec["reasoning"], rec["params"], state=rec["state"], trial=rec["trial"])
            c.val = {cid: r.score for (k, s, cid), (r, _) in self.memo.items()
                     if k == c.key and s == "val" and r.score is not None}
            pool.append(c)
            n_trials += 1
            n_pruned += c.state == "pruned"
            if c.state == "complete" and len(c.val) == len(val) and c.val_mean > best.val_mean + min_gain:
                best, since_gain = c, 0
            else:
                since_gain += 1

        stop = ""
        self.on_event("phase", {"phase": "search"})
        while True:
            b = cfg.budget
            if b.target is not None and best.val_mean >= b.target:
                stop = "target reached"
            elif since_gain >= b.patience:
                stop = f"no accepted gain in {b.patience} trials"
            elif n_trials >= b.max_trials:
                stop = "max trials"
            elif b.max_time_s is not None and time.monotonic() - start >= b.max_time_s:
                stop = "max time"
            elif self.out_of_budget or self.budget.remaining() < min(8, len(val)):
                stop = "budget"
            if stop:
                break
            cand, pruned = await self._trial(pool, index, val, n_trials)
            n_trials += 1
            if cand is None:
                since_gain += 1
                continue
            pool.append(cand)
            n_pruned += pruned
            accepted = (cand.state == "complete" and len(cand.val) == len(val)
                        and cand.val_mean > best.val_mean + min_gain)
            if accepted:
                best, since_gain = cand, 0
            else:
                since_gain += 1
            store.event("trial", candidate=cand.id, operator=cand.operator, state=cand.state, val=cand.val_mean,
                        accepted=accepted, best=best.id, best_val=best.val_mean, usage=self._usage())
            self.on_event("trial", {"n": n_trials, "candidate": cand.id, "operator": cand.operator,
                                    "state": cand.state, "val": cand.val_mean, "n_val": len(cand.val),
                                    "accepted": accepted, "best_val": best.val_mean, "usage": self._usage()})
        store.event("stop", reason=stop)

        # final verdict on test
        self.on_event("phase", {"phase": "test", "stop_reason": stop})
        self.budget.set_reserve(0)
        base_test, _ = await self._eval(baseline, test, "test")
        best_test = base_test if best is baseline else (await self._eval(best, test, "test"))[0]
        b_scores = {r.case_id: r.score for r in base_test if r.score is not None}
        n_scores = {r.case_id: r.score for r in best_test if r.score is not None}
        common = [cid for cid in b_scores if cid in n_scores]
        cmp = paired_compare([b_scores[c] for c in common], [n_scores[c] for c in common], seed=cfg.seed)
        best_md = best.prompt.to_markdown()
        best_path = store.write_best(best_md)
        if cfg.output:
            Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.output).write_text(best_md, encoding="utf-8")
        usage = self._usage()
        result = OptimizeResult(
            run_id=store.run_id, run_dir=str(store.root), baseline_val=round(baseline.val_mean, 4),
            best_val=round(best.val_mean, 4), baseline_test=round(cmp.mean_a, 4), best_test=round(cmp.mean_b, 4),
            delta_ci95=(round(cmp.ci95[0], 4), round(cmp.ci95[1], 4)), p_value=round(cmp.p_value, 6),
            significant=cmp.significant and best is not baseline, model_calls=usage["model_calls"],
            cached_calls=usage["cached_calls"], cost_usd=usage["cost_usd"], trials=n_trials, pruned_trials=n_pruned,
            best_prompt_path=str(cfg.output or best_path), best_candidate=best.id, stop_reason=stop,
            judge_noise=round(noise, 4), elapsed_s=round(time.monotonic() - start, 1),
            baseline_prompt=self.baseline_prompt.to_markdown(), best_prompt=best_md, usage=usage,
            test_wins=cmp.wins, test_losses=cmp.losses)
        store.write_summary(result.to_json())
        store.event("done", significant=result.significant, usage=usage)
        self.on_event("done", result.to_json())
        return result

    async def _trial(self, pool: list[Candidate], index: dict[str, int], val: list[Case],
                     n: int) -> tuple[Candidate | None, bool]:
        trial = self.search.ask()
        params = trial.suggest(len(self.splits.train))
        parent = self._pareto_parent(pool)
        op = params["operator"]
        diag: Diagnosis = Diagnosis()
        failing: list[CaseResult] = []
        if op in ("fix", "restructure", "constraints"):
            diag, failing = await self._diagnosis(parent)
        others = [c for c in pool if c.state == "complete" and c is not parent]
        other = self.rng.choice(others).prompt if others else None
        before = self.reasoner.meter.calls
        prompt, prop = await propose(params, parent.prompt, train=self.splits.train, facts=self.facts,
                                     reasoner=self.reasoner, diagnosis=diag, failing=failing, other=other)
        self.store.event("proposal", trial=trial.number, operator=op, used=prop.operator, fallback=prop.fallback,
                         calls=self.reasoner.meter.calls - before)
        cand = Candidate(f"t{trial.number}", prompt, prop.operator if not prop.fallback else f"{op}->{prop.operator}",
                         parent.id, prop.reasoning, params, trial=trial.number, fallback=prop.fallback)
        trial.set_attr("candidate", cand.id)
        trial.set_attr("key", cand.key)
        trial.set_attr("parent", parent.id)
        self.on_event("trial_start", {"n": n + 1, "candidate": cand.id, "operator": cand.operator,
                                      "parent": parent.id})
        dup = next((c for c in pool if c.key == cand.key and c.state == "complete"), None)
        order = list(val)
        random.Random(self.config.seed * 100_003 + trial.number).shuffle(order)
        if dup is not None:  # the same prompt again: its scores are known, no calls
            for cid, v in dup.val.items():
                trial.report(v, index[cid])
            cand.val, cand.state = dict(dup.val), "duplicate"
            self.search.tell(trial, dup.val_mean)
            self.store.save_candidate(cand.record(), cand.prompt.to_markdown())
            return cand, False
        results, pruned = await self._eval(cand, order, "val", trial, index)
        cand.val = {r.case_id: r.score for r in results if r.score is not None}
        if not cand.val:
            cand.state = "failed"
            self.search.tell(trial, None, failed=True)
        elif pruned:
            cand.state = "pruned"
            self.search.tell(trial, cand.val_mean, pruned=True)
        elif len(cand.val) < len(val) and self.out_of_budget:
            cand.state = "incomplete"
            self.search.tell(trial, None, failed=True)
        else:
            cand.state = "complete"
            self.search.tell(trial, cand.val_mean)
        self.store.save_candidate(cand.record(), cand.prompt.to_markdown())
        return cand, pruned


def optimize(config: OptimizeConfig, *, on_event: Event | None = None, resume: str | None = None,
             run_dir: Path | None = None) -> OptimizeResult:
    """Optimize a prompt (the Python API behind `reflexopt optimize`)."""
    return Optimizer(config, on_event=on_event, resume=resume, run_dir=run_dir).run()
