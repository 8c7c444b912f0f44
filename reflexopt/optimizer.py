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
from pathlib import Path
from typing import Any

from .config import Budget, MetricArg, OptimizeConfig
from .errors import ConfigError, ReflexoptError
from .estimate import run_estimate
from .evaluator import Evaluator
from .events import Event, TrackedBus, attach, plugin_subscribers
from .pool import Candidate, State, case_scores, from_study, held_back, select, steps_to
from .search import GRACE_S, Search, StudyState, worker_id
from .store import RunStore, write_text_atomic
from .strategies import SearchContext, get_strategy
from .verdict import (
    OptimizeResult,
    cheaper_variants,
    choose,
    paired_on_test,
    test_echo,
    test_labels,
    test_money,
    test_reference,
)


class Optimizer:
    def __init__(self, config: OptimizeConfig, *, on_event: Event | None = None, resume: str | None = None,
                 run_dir: Path | None = None, changes: dict[str, Any] | None = None) -> None:
        """A new run of `config`, or with `resume` (a run id, "" for the latest) or an existing `run_dir`, the
        run as it was started: `config` then gives only its storage URL, and `changes` what a resume may change
        ({"budget": {field: value}} merged into the run's budget, {"output": path}); they are written to the
        run's config.json once the run is claimed, so a later resume and `runs show` see them."""
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
            baseline: str | None = self.store.baseline_markdown()
            self.resumed = True
        else:
            data = config.data.model_copy(update={"path": str(Path(config.data.path).resolve())})
            self.config = config.model_copy(update={"data": data,
                                                    "prompt_path": str(Path(config.prompt_path).resolve())})
            baseline = None  # the config's prompt file
            self.store = None
            self._run_dir = run_dir
            self.resumed = False
        self._search: Search | None = None
        self._self_agreement: dict[str, Any] | None = None
        self._known: dict[str, Any] | None = None
        self.bus = TrackedBus([on_event], self.config.track)  # trackers are checked here, before any model call
        attach(self.bus, plugin_subscribers())
        self.evaluator = Evaluator(self.config, baseline, memo=self.store.evals() if self.store else None,
                                   on_event=self.bus)
        self.strategy = get_strategy(self.config.strategy)

        if not self.evaluator.start.default_task and not getattr(self.strategy, "any_task", True):
            what = "a pipeline" if self.config.pipeline is not None else "a judge's alignment"
            raise ConfigError(f"strategy {self.config.strategy!r} drives the model itself and cannot run {what}",
                              fix="use --strategy reflex")
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
        """The run's expected calls (and cost, where prices are known), with a warning when the budget cannot
        cover the baseline and the verdict."""
        return run_estimate(self.config, self.evaluator)

    # ---------------------------------------------------------------- pieces
    async def _judge_noise(self, baseline: Candidate) -> float:
        """SD of one verdict, from the judge's self-agreement on a sample of baseline val outputs (0 for
        deterministic metrics, and when fewer than 2 redraws parsed). The judge's verdicts on known answers are
        measured beside it, for the record and a warning."""
        sa = await self.evaluator.judge_agreement(baseline, self.config.noise_sample)
        if sa is None:
            return 0.0
        self._self_agreement = sa.to_json()
        self._emit("judge_noise", {**self._self_agreement, "text": sa.text()})
        known = await self.evaluator.judge_known()
        if known is not None:
            self._known = known.to_json()
            self._emit("judge_known", {**self._known, "text": known.text()})
        return sa.sd if sa.n >= 2 else 0.0

    def _reserve(self) -> int:
        """Calls the search leaves unspent: the final test (both prompts), and with `--objective cost` two val
        scorings of cheaper variants tried after it (`verdict.cheaper_variants`; a third if calls remain)."""
        r = self.evaluator
        trims = 2 * len(r.val) if self.config.objective == "cost" else 0
        return r.test_reserve + trims * r.calls_per_case

    async def _trim(self, search: Search, baseline: Candidate, min_gain: float) -> list[Candidate]:
        """`--objective cost`: score on val the cheaper variants (fewer demos) of the candidate the run would
        return, so the cost pick can be cheaper than every prompt the search happened to make. Variants the
        budget could not score on all of val are left out."""
        cfg, r, store = self.config, self.evaluator, self.store
        assert store is not None
        r.budget.set_reserve(r.test_reserve)  # the variants' reserve is spent now
        if cfg.objective != "cost":
            return []
        pool = from_study(search.records(), r.val)
        evals = store.evals()
        pick, _, _ = choose(select(pool, len(r.val), min_gain).best, baseline, pool, len(r.val), objective="cost",
                            max_prompt_tokens=cfg.max_prompt_tokens, margin=cfg.cost_margin, price=r.task_price()[0],
                            results=lambda c: store.results(c.prompts, "val", evals))
        known, out = {c.key for c in pool}, []
        for v in cheaper_variants(pick):
            if v.key in known:
                continue
            if r.budget.remaining() < len(r.val) * r.calls_per_case:
                break  # not enough for a whole val scoring beside the final test's reserve
            # stopped once clearly worse than the pick: a variant that is costs 15 calls, not a val scoring
            hook = search.against({r.index[k]: x for k, x in pick.val.items()})
            res, pruned = await r.evaluate(v, r.val, "val", hook)
            val = case_scores(res)
            if pruned or len(val) == len(r.val):
                v = v.scored(val, State.PRUNED if pruned else State.COMPLETE)
                store.save_candidate(v.record(), v.prompts.to_markdown())
                out.append(v)
        if out:
            stopped = sum(v.state == State.PRUNED for v in out)
            self._emit("note", {"message": f"--objective cost: scored {len(out)} cheaper variants of {pick.id} on "
                                           f"val (fewer demos; {stopped} stopped early as worse)"})
        return out

    def _models(self) -> dict[str, str]:
        """Who does what in this run, for the header: task, reasoning (and why that model), scoring."""
        r, align = self.evaluator, self.config.align
        if align is not None:  # the judge is the task; the score is its agreement with people
            return {"task": f"{self.config.model.id} as the judge, rubric {align.rubric}",
                    "reasoning": f"{r.reasoner.spec.id} ({r.reasoner_why})",
                    "scorer": f"agreement with the people's verdicts in {align.human!r} (pass or fail)"}
        return {"task": self.config.model.id, "reasoning": f"{r.reasoner.spec.id} ({r.reasoner_why})",
                "scorer": r.scorer.describe()}

    def _judge_record(self) -> dict[str, Any] | None:
        """The run's judge: self-agreement, verdicts, contradictions (the first few), parse errors, and how
        verdicts were asked for; None for a metric."""
        report = getattr(self.evaluator.scorer, "report", None)
        if report is None:
            return None
        cfg = self.config
        own = cfg.scorer.self_grading_warning(cfg.model) is not None
        return report(self._self_agreement, known=self._known, grades_own_answers=own)  # type: ignore[no-any-return]

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

    def _write_output(self, best: Candidate, best_path: Path) -> None:
        """`-o`: the best prompt (a folder of NAME.md for a pipeline), each file written whole or not at all, so
        a prompt tuned in place survives a full disk. The run folder already holds the result."""
        cfg = self.config
        if not cfg.output:
            return
        try:
            own = getattr(self.evaluator.task, "output_file", None)  # a task's own file (alignment's rubric)
            if own is not None:
                write_text_atomic(Path(cfg.output), own(best.prompts))
            elif cfg.pipeline is not None:
                for name in best.prompts.names:
                    write_text_atomic(Path(cfg.output) / f"{name}.md", best.prompts[name].to_markdown())
            else:
                write_text_atomic(Path(cfg.output), best.prompts.to_markdown())
        except OSError as e:
            raise ConfigError(f"could not write -o {cfg.output}: {e.strerror or e} (the file there is unchanged)",
                              fix=f"the best prompt is in {best_path}; free space or choose another -o, then "
                                  "copy it or run the same command with --resume") from None

    # ------------------------------------------------------------------ loop
    def run(self) -> OptimizeResult:
        return asyncio.run(self.arun())

    async def arun(self) -> OptimizeResult:
        if self.store is not None:  # a resume; a new run's store is created (and claimed) in _arun
            self.store.claim()  # outside the try: a run that another process runs is not failed
            if self._changed:
                self.store.save_config(self.config.public())
        ok = False
        try:
            result = await self._arun()
            ok = True
            return result
        except ReflexoptError as e:  # a run that stops on an error is failed, not interrupted
            if self.store is not None:
                self.store.mark_failed(str(e))
            raise
        finally:
            self.bus.finish(ok)
            await self.evaluator.aclose()
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
                             "study": search.name, "models": self._models(), **est})
        if warning := cfg.scorer.self_grading_warning(cfg.model):
            self._emit("note", {"message": warning})
        r.budget.set_reserve(self._reserve())
        stale = search.fail_stale(immediately=cfg.storage is None)
        if stale:
            self._emit("stale_trials_failed", {"n": stale})

        self._emit("phase", {"phase": "baseline"})
        baseline = Candidate("baseline", r.baseline_prompts)
        res, _ = await r.evaluate(baseline, r.val, "val")
        baseline = baseline.scored(case_scores(res), State.COMPLETE)
        refused = len(r.val) - sum(1 for x in res if not x.budget_exhausted)  # cases the budget did not allow
        if not baseline.val and refused:
            raise ConfigError(f"the budget ran out before the starting prompt was scored on val ({len(r.val)} cases, "
                              f"{refused} not scored for the budget, which also keeps calls for the final test)",
                              fix="raise --max-calls or --max-cost (`--dry-run` prints what a run needs), then "
                                  "run again with --resume")
        if not baseline.val:
            first = next((x.error for x in res if x.error), "no output")
            raise ConfigError("the baseline produced no scorable output on val (every case failed; the first: "
                              f"{first.strip().splitlines()[-1][:300]})",
                              fix="check the model and scorer" + (f"; see {store.root / 'evals.jsonl'}"
                                                                  if (store.root / "evals.jsonl").exists() else ""))
        r.check_task()
        r.budget.set_reserve(self._reserve())  # a pipeline's calls per case are known now
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
        trims = await self._trim(search, baseline, min_gain)
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
            kept_out = held_back(pool, sel.best, len(r.val), min_gain)
            self._export(pool)
            pool += trims
            evals = store.evals()
            best, frontier, chosen_by = choose(
                sel.best, baseline, pool, len(r.val), objective=cfg.objective,
                max_prompt_tokens=cfg.max_prompt_tokens, margin=cfg.cost_margin,
                results=lambda c: store.results(c.prompts, "val", evals),
                price=r.task_price()[0])
            if best.id == "baseline":
                base_test = best_test = (await base_job)[0]
            else:
                (base_test, _), (best_test, _) = await asyncio.gather(base_job, r.evaluate(best, r.test, "test"))
        finally:
            if not base_job.done():
                base_job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await base_job
        base_test, n_base, ok_base = await r.rejudge(baseline, base_test, "test")
        if best.id == "baseline":
            best_test = base_test
        else:
            best_test, n_best, ok_best = await r.rejudge(best, best_test, "test")
            n_base, ok_base = n_base + n_best, ok_base + ok_best
        cmp, coverage = paired_on_test(base_test, best_test, [c.id for c in r.test], seed=cfg.seed)
        if getattr(r.scorer, "kind", "") == "judge":
            coverage["rejudged"] = {"verdicts": n_base, "then_scored": ok_base}
        best_md = best.prompts.to_markdown()
        best_path = store.write_best(best_md)
        labels = await test_labels(r.scorer, base_test, best_test, r.splits.train, r.test)
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
            lineage=steps_to(pool, best.id, sel.accepted),
            unspent_calls=r.budget.unspent(),
            operators=dict(Counter(c.operator for c in pool if c.id != "baseline")), test_cases=coverage,
            objective=cfg.objective, chosen_by=chosen_by, frontier=[p.to_json() for p in frontier],
            money=test_money(base_test, best_test, *r.task_price()),
            test_labels=labels, test_echo=test_echo(base_test, best_test),
            test_reference=test_reference(getattr(r.scorer, "kind", ""), base_test, best_test, r.test, cmp.delta,
                                          seed=cfg.seed),
            distinct_candidates=len({c.key for c in pool} - {baseline.key}),
            duplicate_trials=sum(c.state == State.DUPLICATE for c in pool), reasoner=self._models()["reasoning"],
            judge=self._judge_record(), held_back=kept_out)
        store.write_summary(result.to_json())
        self._write_output(best, best_path)
        self._emit("done", result.to_json())
        return result

def optimize(config: OptimizeConfig | str | Path, prompt: str | Path | None = None, *,
             model: str | None = None, judge: str | None = None, rubric: str | None = None,
             metric: MetricArg = None, reasoning_model: str | None = None, max_calls: int | None = None,
             max_cost: float | None = None, max_trials: int | None = None, strategy: str = "reflex",
             seed: int = 0, balanced: bool = False, output: str | Path | None = None,
             on_event: Event | None = None, resume: str | None = None, run_dir: Path | None = None) -> OptimizeResult:
    """Optimize a prompt (the Python API behind `reflexopt optimize`).

        ro.optimize("data.jsonl", "prompt.md", model="openai/gpt-4o-mini", judge="openai/gpt-4o", max_calls=2000)
        ro.optimize(ro.OptimizeConfig(...))          # or a full config

    Models take the command line's `ID@key=value` form; with no model the embedded local model is used. `metric`
    is a `--metric` spec or a Python function `(output, case)` returning what a metric file's function may.
    `balanced` is `--balanced` (val and test with as many cases of each label)."""
    if not isinstance(config, OptimizeConfig):
        if prompt is None:
            raise ConfigError("optimize(data, prompt, ...) needs both a dataset and a prompt file",
                              fix='call ro.optimize("data.jsonl", "prompt.md", model=...)')
        from .config import Budget, optimize_config

        config = optimize_config(config, prompt, model=model, reasoning_model=reasoning_model, judge=judge,
                                 rubric=rubric, metric=metric, output=output, seed=seed, balanced=balanced,
                                 strategy=strategy,
                                 budget=Budget(max_calls=max_calls, max_cost=max_cost, max_trials=max_trials))
    return Optimizer(config, on_event=on_event, resume=resume, run_dir=run_dir).run()
