"""Compare models after tuning each one's prompt: one table, a recommendation, an optional transfer matrix.

Every model gets its own optimize run (same data, same split, same scorer), so the question "is the small
model bad, or was the prompt bad?" is answered on equal terms. One model failing does not lose the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .config import CompareConfig, ModelSpec, public, run_config
from .evaluate import CaseResult, case_scores, check_specs, constant_text, constant_with, load_test, score_with
from .events import Event, TrackedBus
from .parallel import map_threads
from .prompt import Prompt, load_prompt, parse_prompt
from .recommend import Constraints, ModelRow, recommend, row_from_results, selection_adjusted
from .store import hold_folder, new_run_id, read_json, runs_root, write_text_atomic
from .workload import Workload

__all__ = ["CompareResult", "Comparison", "ModelRow", "compare", "load_compare", "recommend"]


@dataclass(frozen=True)
class CompareResult:
    compare_id: str
    rows: tuple[ModelRow, ...]
    recommendation: str | None
    reason: str
    transfer: dict[str, dict[str, float | None]] | None
    n_test: int
    elapsed_s: float
    margin: float = 0.05  # the equivalence margin of the recommendation
    selection: dict[str, Any] | None = None  # the best model's score re-estimated for the winner's curse
    constant: dict[str, Any] | None = None  # a label task: what answering the most common label scores on test

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["rows"]:
            r.pop("scores", None)
        return d


class Comparison:
    def __init__(self, config: CompareConfig, *, on_event: Event | None = None) -> None:
        self.config = cfg = config
        self.on_event = TrackedBus([on_event], cfg.track, checked=False)  # trackers: a parent run, one per model
        self.prompt = load_prompt(cfg.prompt_path)
        work = Workload.load(cfg.data, self.prompt, fractions=cfg.split, seed=cfg.seed, balanced=cfg.balanced,
                             check_fields=cfg.pipeline is None)
        self.cases = list(work.cases)
        self.test = work.test
        self.work = work
        self.id = "compare-" + new_run_id()
        self.root = runs_root() / self.id

    async def _score(self, model: ModelSpec, prompt: Prompt) -> list[CaseResult]:
        rep = await score_with(self.test, prompt, model, self.config.scorer, scorer_cases=self.cases,
                               concurrency=self.config.concurrency)
        return list(rep.results)

    def _one(self, model: ModelSpec) -> ModelRow:
        from .optimizer import Optimizer

        cfg = self.config
        self.on_event("model_start", {"model": model.label})
        try:
            if not cfg.tune:
                res = asyncio.run(self._score(model, self.prompt))
                base, tuned, run_id = res, res, None
                row = row_from_results(model, res, res, None, self.prompt.to_markdown())
                if row.tuned is None:
                    first = next((r.error for r in res if r.error), "no output")
                    raise RuntimeError(f"no test case could be scored: {first}")
            else:
                opt = Optimizer(run_config(cfg, model), on_event=self.on_event.tagged(model=model.label))
                result = opt.run()
                store = opt.store
                assert store is not None
                memo = store.evals()
                base = list(store.results(opt.evaluator.baseline_prompts, "test", memo).values())
                tuned = list(store.results(result.best_prompt, "test", memo).values())
                run_id = result.run_id
                row = row_from_results(model, base, tuned, run_id, result.best_prompt)
            if row.tuned is None:
                raise RuntimeError("no test case could be scored")
            if cfg.load:  # the tuned prompt under load: real calls, outside the run's budget and cache
                tuned_prompt = parse_prompt(row.tuned_prompt or self.prompt.to_markdown())
                levels = asyncio.run(load_test(model, tuned_prompt, self.test, cfg.load, cfg.load_calls))
                best_rps = max((x.throughput_rps for x in levels if x.errors < x.requests), default=None)
                row = replace(row_from_results(model, base, tuned, run_id, row.tuned_prompt, throughput_rps=best_rps),
                              load=[x.to_json() for x in levels])
                self.on_event("note", {"message": f"{model.label}: load test " + ", ".join(
                    f"{x.concurrency} in flight p95 {x.p95_s} s, {x.rate_limited} x 429" for x in levels)})
        except Exception as e:  # noqa: BLE001 - one model failing must not lose the others
            row = ModelRow(model=model.label, error=f"{type(e).__name__}: {e}"[:300])
        with (self.root / "rows.jsonl").open("a", encoding="utf-8") as f:  # an interrupted compare keeps these
            f.write(json.dumps(asdict(row)) + "\n")
        self.on_event("model_done", {"model": model.label, "row": asdict(row)})
        return row

    def preflight(self) -> None:
        """Every model id, key and setting, the scorer and the strategy, before any model starts."""
        from .strategies import get_strategy

        cfg = self.config
        check_specs((*cfg.models, cfg.reasoning, cfg.scorer.judge), cfg.scorer, self.cases)
        get_strategy(cfg.strategy)

    def run(self) -> CompareResult:
        ok = False
        try:
            result = self._run()
            ok = True
            return result
        finally:
            self.on_event.finish(ok)

    def _run(self) -> CompareResult:
        start = time.monotonic()
        cfg = self.config
        labels = [m.label for m in cfg.models]
        self.preflight()
        self.root.mkdir(parents=True, exist_ok=True)
        # held while the comparison runs (the process's end releases it), so `runs list` can tell it from an
        # interrupted one
        lock = hold_folder(self.root, f"compare {self.id}")
        try:
            write_text_atomic(self.root / "config.json", json.dumps(public(cfg.model_dump(mode="json")), indent=2))
            self.on_event("start", {"compare_id": self.id, "models": labels, "n_test": len(self.test)})
            rows = map_threads(self._one, cfg.models, cfg.parallel)
            transfer = self._transfer(rows) if cfg.transfer else None
            limits = Constraints(cfg.max_p95_s, cfg.max_cost_per_1k, cfg.min_score)
            choice, reason = recommend(rows, cfg.target, cfg.margin, limits)
            constant = self._constant()
            scored = [r.tuned for r in rows if r.error is None and r.tuned is not None]
            if constant is not None and scored and max(scored) <= constant["score"]:
                reason += (f". No model scores above the constant answer ({constant_text(constant)}): with its "
                           "tuned prompt, none tells these cases apart better than one answer does")
            result = CompareResult(self.id, tuple(rows), choice, reason, transfer, len(self.test),
                                   round(time.monotonic() - start, 1), cfg.margin, selection_adjusted(rows),
                                   constant)
            write_text_atomic(self.root / "compare.json", json.dumps(result.to_json(), indent=2))
        finally:
            lock.release()
        self.on_event("done", result.to_json())
        return result

    def _constant(self) -> dict[str, Any] | None:
        """On a label task scored by a label metric, what answering the train split's most common label to every
        test case scores (evaluate.constant_answer; no model call): the bar that shows a model tells the cases
        apart at all."""
        if not self.work.facts.categorical:
            return None
        return asyncio.run(constant_with(self.config.scorer, self.cases, self.work.splits.train, self.test))

    def _transfer(self, rows: Sequence[ModelRow]) -> dict[str, dict[str, float | None]]:
        """matrix[prompt tuned for A][scored on model B] = mean test score."""
        self.on_event("phase", {"phase": "transfer"})
        specs = {m.label: m for m in self.config.models}
        matrix: dict[str, dict[str, float | None]] = {}
        for src in rows:
            matrix[src.model] = {}
            for dst in rows:
                if src.tuned_prompt is None or dst.error is not None:
                    matrix[src.model][dst.model] = None
                elif src.model == dst.model:
                    matrix[src.model][dst.model] = src.tuned
                else:
                    res = asyncio.run(self._score(specs[dst.model], parse_prompt(src.tuned_prompt, src.model)))
                    vals = list(case_scores(res).values())
                    matrix[src.model][dst.model] = round(sum(vals) / len(vals), 4) if vals else None
        return matrix


def compare(config: CompareConfig, *, on_event: Event | None = None) -> CompareResult:
    """Tune and score every model on the same data (the Python API behind `reflexopt compare`)."""
    return Comparison(config, on_event=on_event).run()


def load_compare(path: Path) -> dict[str, Any]:
    return read_json(path / "compare.json")
