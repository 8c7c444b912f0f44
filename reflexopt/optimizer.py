"""The optimize loop: baseline, search (the strategy's own loop, here and in any workers), honest selection,
final verdict on test. Knows nothing of terminals: progress goes out as events on the run's EventBus, to which
the run store, the caller's callback and any plug-in subscribers are attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import Budget, OptimizeConfig
from .errors import ConfigError, ReflexoptError
from .evaluator import Evaluator
from .events import Event, EventBus
from .operators import LLM_OPERATORS, NAMES
from .pool import Candidate, State, from_study, select
from .prompt import load_prompt
from .promptset import PromptSet
from .search import GRACE_S, Search, StudyState
from .stats import paired_compare
from .store import RunStore
from .strategies import SearchContext, get_strategy
from .worker import worker_id


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
    accepted_path: tuple[str, ...] = ()
    study: str = ""
    unspent_calls: int | None = None  # of --max-calls, when set
    operators: dict[str, int] | None = None  # trials per operator that actually ran

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta_ci95"] = list(self.delta_ci95)
        d["accepted_path"] = list(self.accepted_path)
        return d


def estimate(n_val: int, n_test: int, n_train_sample: int, max_trials: int, judged: bool) -> dict[str, Any]:
    """Rough call count for a run. No candidate is stopped before 15 val cases; there the gate stops most of
    them (measured on the embedded model at 60 val cases: 21 to 27 calls per trial, diagnoses included), so a
    trial costs about 15 + (n_val - 15) / 4 cases."""
    per_case = 2 if judged else 1
    llm_share = len(LLM_OPERATORS) / len(NAMES)
    per_trial = n_val if n_val <= 15 else 15 + (n_val - 15) / 4
    search = int(max_trials * (per_trial * per_case + llm_share * (2 + 0.3 * n_train_sample * per_case)))
    total = n_val * per_case + search + 2 * n_test * per_case
    return {"calls_estimate": total, "calls_baseline": n_val * per_case, "calls_search": search,
            "calls_final_test": 2 * n_test * per_case}


class Optimizer:
    def __init__(self, config: OptimizeConfig, *, on_event: Event | None = None, resume: str | None = None,
                 run_dir: Path | None = None, changes: dict[str, Any] | None = None) -> None:
        """A new run of `config`, or with `resume` (a run id, "" for the latest) or an existing `run_dir`, the
        run as it was started: `config` then gives only its storage URL, and `changes` what a resume may change
        ({"budget": {field: value}} merged into the run's budget, {"output": path}); they are written to the
        run's config.json once the run is claimed, so a later resume and `runs show` see them."""
        self.bus = EventBus([on_event, *plugin_subscribers()])
        self._changed = False
        if resume is not None or (run_dir is not None and (run_dir / "config.json").exists()):
            ref = None if resume in ("", "latest") else resume  # no id: the latest run
            self.store: RunStore | None = RunStore.open(ref, run_dir=run_dir)
            stored = OptimizeConfig.model_validate(self.store.config())
            update: dict[str, Any] = {"storage": config.storage or stored.storage}
            if changes:
                update["budget"] = Budget.model_validate({**stored.budget.model_dump(), **changes.get("budget", {})})
                if changes.get("output") is not None:
                    update["output"] = str(changes["output"])
                self._changed = True
            self.config = stored.model_copy(update=update)
            baseline = PromptSet.parse(self.store.baseline_markdown(), "baseline")
            self.resumed = True
        else:
            data = config.data.model_copy(update={"path": str(Path(config.data.path).resolve())})
            self.config = config.model_copy(update={"data": data,
                                                    "prompt_path": str(Path(config.prompt_path).resolve())})
            baseline = PromptSet.of(load_prompt(self.config.prompt_path))
            self.store = None
            self._run_dir = run_dir
            self.resumed = False
        self._search: Search | None = None
        self.evaluator = Evaluator(self.config, baseline, memo=self.store.evals() if self.store else None,
                                   on_event=self.bus)
        self.strategy = get_strategy(self.config.strategy)
        self.evaluator.preflight()

    @property
    def on_event(self) -> Event:
        """Setting it subscribes one more callback (the CLI's live view does)."""
        return self.bus

    @on_event.setter
    def on_event(self, callback: Event) -> None:
        self.bus.subscribe(callback)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self.bus.emit(kind, data)

    def estimate(self) -> dict[str, Any]:
        cfg, r = self.config, self.evaluator
        est = estimate(len(r.val), len(r.test), min(cfg.diagnose_sample, len(r.splits.train)),
                       min(cfg.budget.trial_limit, 60), cfg.scorer.judge is not None)
        if cfg.budget.max_calls:
            fixed = est["calls_baseline"] + est["calls_final_test"]
            if cfg.budget.max_calls < fixed:
                est["warning"] = (f"--max-calls {cfg.budget.max_calls} is below the {fixed} calls that scoring the "
                                  "starting prompt on val and the final test alone need; the search will not run")
            est["calls_estimate"] = min(est["calls_estimate"], cfg.budget.max_calls)
        est.update(n_train=len(r.splits.train), n_val=len(r.val), n_test=len(r.test), max_trials=cfg.budget.trial_limit)
        est["cost_estimate_usd"] = self._cost_estimate(est["calls_estimate"])
        return est

    def _cost_estimate(self, calls: int) -> float | None:
        from .models import price_per_token

        specs = [self.config.model] + ([self.config.scorer.judge] if self.config.scorer.judge else [])
        prices = [price_per_token(s.id) for s in specs]
        if any(p is None for p in prices):
            return None
        cases = self.evaluator.cases
        avg_in = sum(len(c.input_text) for c in cases) / len(cases) / 4 + \
            sum(len(p.text) for p in self.evaluator.baseline_prompts.values()) / 4
        per = sum((p[0] * (avg_in + 200) + p[1] * 150) for p in prices if p) / len(prices)
        return round(per * calls, 4)

    # ---------------------------------------------------------------- pieces
    async def _judge_noise(self, baseline: Candidate) -> float:
        """SD of one judgement, from re-judging a sample of baseline val outputs (0 for deterministic metrics)."""
        from .judge import JudgeScorer

        r = self.evaluator
        if not isinstance(r.scorer, JudgeScorer) or self.config.noise_sample == 0:
            return 0.0
        first = [res for (k, s, _), (res, _) in r.memo.items()
                 if k == baseline.key and s == "val" and res.score is not None][: self.config.noise_sample]
        by_id = {c.id: c for c in r.cases}
        outs = await asyncio.gather(*(r.scorer.score(by_id[x.case_id], x.output, sample=1) for x in first))
        pairs = [(x.score, s.value) for x, s in zip(first, outs) if x.score is not None and s.value is not None]
        if len(pairs) < 2:
            return 0.0
        diffs = [a - b for a, b in pairs]
        sd = math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs)))
        self._emit("judge_noise", {"n": len(pairs), "sd": sd})
        return sd

    async def _wait_for_workers(self, search: Search) -> None:
        """Let trials that other processes are still running finish (or go stale) before the verdict."""
        deadline = time.monotonic() + GRACE_S + 30
        while time.monotonic() < deadline:
            search.fail_stale()
            if not any(t.state == StudyState.RUNNING for t in search.records()):
                return
            await asyncio.sleep(0.25)  # the verdict waits on this: notice the last trial soon after it ends

    def _export(self, pool: list[Candidate]) -> None:
        """Write candidates that other workers made into the run directory (once each)."""
        assert self.store is not None
        have = {r["id"] for r in self.store.candidates()}
        for c in pool:
            if c.id not in have:
                self.store.save_candidate(c.record(), c.prompts.to_markdown())

    # ------------------------------------------------------------------ loop
    def run(self) -> OptimizeResult:
        return asyncio.run(self.arun())

    async def arun(self) -> OptimizeResult:
        if self.store is not None:  # a resume; a new run's store is created (and claimed) in _arun
            self.store.claim()  # outside the try: a run that another process runs is not failed
            if self._changed:
                self.store.save_config(self.config.public())
        try:
            return await self._arun()
        except ReflexoptError as e:  # a run that stops on an error is failed, not interrupted
            if self.store is not None:
                self.store.mark_failed(str(e))
            raise
        finally:
            if self._search is not None:
                self._search.close()
            if self.store is not None:
                self.store.release()

    async def _arun(self) -> OptimizeResult:
        start = time.monotonic()
        cfg, r = self.config, self.evaluator
        base_md = r.baseline_prompts.to_markdown()
        if self.store is None:
            self.store = RunStore.create(cfg.public(), run_dir=self._run_dir, baseline=base_md)
            self.store.save_candidate(Candidate("baseline", r.baseline_prompts).record(), base_md)
        store = self.store
        self.bus.subscribe(store.on_event)
        r.on_case_scored.append(store.add_eval)
        search = self._search = Search(cfg.storage or store.storage_url(), store.study_name(), seed=cfg.seed,
                                       pruning=cfg.pruning)
        known = search.attrs().get("data_fingerprint")
        if known is None:  # the process that owns the run records it (a worker never)
            search.set("data_fingerprint", r.work.fingerprint)
        r.check_data(known)
        prior = sum(int(e.get("calls", 0)) for e in store.events() if e["event"] in ("diagnosis", "proposal"))
        r.connect(prior_calls=prior, started=start)
        est = self.estimate()
        self._emit("start", {"run_id": store.run_id, "run_dir": str(store.root), "resumed": self.resumed,
                             "study": search.name, **est})
        r.budget.set_reserve(2 * len(r.test) * r.calls_per_case)
        stale = search.fail_stale(immediately=cfg.storage is None)
        if stale:
            self._emit("stale_trials_failed", {"n": stale})

        self._emit("phase", {"phase": "baseline"})
        baseline = Candidate("baseline", r.baseline_prompts)
        res, _ = await r.evaluate(baseline, r.val, "val")
        baseline = baseline.scored({x.case_id: x.score for x in res if x.score is not None}, State.COMPLETE)
        if not baseline.val:
            raise ConfigError("the baseline prompt produced no scorable output on val (every call failed)",
                              fix=f"check the model and scorer; see {store.root / 'evals.jsonl'}")
        store.save_candidate(baseline.record(), base_md)
        noise = await self._judge_noise(baseline)
        min_gain = 2 * noise / math.sqrt(len(r.val)) if noise else 0.0
        if not any(t.attrs.get("candidate") == "baseline" for t in search.records()):
            search.add_baseline(baseline.val_mean, {r.index[k]: v for k, v in baseline.val.items()},
                                baseline.attrs())
        search.set("reflexopt_config", cfg.public())
        search.set("baseline_prompt", base_md)
        search.set("min_gain", min_gain)
        search.set("run_id", store.run_id)
        search.set("status", "running")
        self._emit("baseline", {"val": baseline.val_mean, "noise": noise, "min_gain": min_gain, "usage": r.usage()})
        ctx = SearchContext(r, search, baseline, min_gain, emit=self.bus, worker=worker_id())

        self._emit("phase", {"phase": "search", "strategy": self.strategy.name})
        stop = await self.strategy.search(ctx)
        search.set("status", "stopping")
        self._emit("stop", {"reason": stop})
        self._emit("phase", {"phase": "test", "stop_reason": stop})
        r.budget.set_reserve(0)
        # the starting prompt's test score does not depend on the search: it is scored while other processes
        # finish their last trials, and beside the best candidate's
        base_job = asyncio.ensure_future(r.evaluate(baseline, r.test, "test"))
        try:
            await self._wait_for_workers(search)
            search.set("status", "done")
            pool = from_study(search.records(), r.val)
            sel = select(pool, len(r.val), min_gain)
            best = sel.best
            self._export(pool)
            if best.id == "baseline":
                base_test = best_test = (await base_job)[0]
            else:
                (base_test, _), (best_test, _) = await asyncio.gather(base_job, r.evaluate(best, r.test, "test"))
        finally:
            if not base_job.done():
                base_job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await base_job
        b_scores = {x.case_id: x.score for x in base_test if x.score is not None}
        n_scores = {x.case_id: x.score for x in best_test if x.score is not None}
        common = [cid for cid in b_scores if cid in n_scores]
        cmp = paired_compare([b_scores[c] for c in common], [n_scores[c] for c in common], seed=cfg.seed)
        best_md = best.prompts.to_markdown()
        best_path = store.write_best(best_md)
        if cfg.output:
            Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.output).write_text(best_md, encoding="utf-8")
        usage = r.usage()
        result = OptimizeResult(
            run_id=store.run_id, run_dir=str(store.root), baseline_val=round(baseline.val_mean, 4),
            best_val=round(best.val_mean, 4), baseline_test=round(cmp.mean_a, 4), best_test=round(cmp.mean_b, 4),
            delta_ci95=(round(cmp.ci95[0], 4), round(cmp.ci95[1], 4)), p_value=round(cmp.p_value, 6),
            significant=cmp.significant and best.id != "baseline", model_calls=usage["model_calls"],
            cached_calls=usage["cached_calls"], cost_usd=usage["cost_usd"], trials=sel.trials,
            pruned_trials=sel.pruned, best_prompt_path=str(cfg.output or best_path), best_candidate=best.id,
            stop_reason=stop, judge_noise=round(noise, 4), elapsed_s=round(time.monotonic() - start, 1),
            baseline_prompt=base_md, best_prompt=best_md, usage=usage,
            test_wins=cmp.wins, test_losses=cmp.losses, accepted_path=sel.accepted, study=search.name,
            unspent_calls=r.budget.unspent(),
            operators=dict(Counter(c.operator for c in pool if c.id != "baseline")))
        store.write_summary(result.to_json())
        self._emit("done", result.to_json())
        return result

def plugin_subscribers() -> list[Event]:
    """Event subscribers that installed packages register (entry-point group `reflexopt.subscribers`)."""
    from .plugins import available, load

    return [load("reflexopt.subscribers", n, what="event subscriber", fix="reinstall it or uninstall it")()
            for n in available("reflexopt.subscribers")]


def optimize(config: OptimizeConfig | str | Path, prompt: str | Path | None = None, *,
             model: str | None = None, judge: str | None = None, rubric: str | None = None,
             metric: str | None = None, reasoning_model: str | None = None, max_calls: int | None = None,
             max_cost: float | None = None, max_trials: int | None = None, strategy: str = "reflex",
             seed: int = 0, output: str | Path | None = None, on_event: Event | None = None,
             resume: str | None = None, run_dir: Path | None = None) -> OptimizeResult:
    """Optimize a prompt (the Python API behind `reflexopt optimize`).

        ro.optimize("data.jsonl", "prompt.md", model="openai/gpt-4o-mini", judge="openai/gpt-4o", max_calls=2000)
        ro.optimize(ro.OptimizeConfig(...))          # or a full config

    Models take the command line's `ID@key=value` form; with no model the embedded local model is used."""
    if not isinstance(config, OptimizeConfig):
        if prompt is None:
            raise ConfigError("optimize(data, prompt, ...) needs both a dataset and a prompt file",
                              fix='call ro.optimize("data.jsonl", "prompt.md", model=...)')
        from .config import Budget, optimize_config

        config = optimize_config(config, prompt, model=model, reasoning_model=reasoning_model, judge=judge,
                                 rubric=rubric, metric=metric, output=output, seed=seed, strategy=strategy,
                                 budget=Budget(max_calls=max_calls, max_cost=max_cost, max_trials=max_trials))
    return Optimizer(config, on_event=on_event, resume=resume, run_dir=run_dir).run()
