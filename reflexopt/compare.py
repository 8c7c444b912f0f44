"""Compare models after tuning each one's prompt: one table, a recommendation, an optional transfer matrix.

Every model gets its own optimize run (same data, same split, same scorer), so the question "is the small
model bad, or was the prompt bad?" is answered on equal terms. One model failing does not lose the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import CompareConfig, ModelSpec, public, run_config
from .data import Case
from .errors import ConfigError
from .evaluate import CaseResult, evaluate_async
from .events import Event, forward
from .models import get_client, price_per_token
from .parallel import map_threads
from .paths import hold_lock
from .prompt import Prompt, load_prompt, parse_prompt
from .scoring import make_scorer
from .stats import mean_ci, paired_compare, percentile
from .store import new_run_id, read_json, runs_root
from .workload import Workload


@dataclass(frozen=True)
class ModelRow:
    model: str
    baseline: float | None = None
    tuned: float | None = None
    tuned_ci95: tuple[float, float] | None = None
    gain: float | None = None
    pass_rate: float | None = None
    tokens_per_request: float | None = None
    cost_per_1k: float | None = None  # USD per 1,000 requests with the tuned prompt (None: price unknown)
    cost_per_success: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    significant_gain: bool = False
    run_id: str | None = None
    tuned_prompt: str | None = None
    error: str | None = None
    scores: dict[str, float] = field(default_factory=dict, repr=False)  # per test case, tuned prompt


@dataclass(frozen=True)
class CompareResult:
    compare_id: str
    rows: tuple[ModelRow, ...]
    recommendation: str | None
    reason: str
    transfer: dict[str, dict[str, float | None]] | None
    n_test: int
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["rows"]:
            r.pop("scores", None)
        return d


def _row_from_results(model: ModelSpec, base: Sequence[CaseResult], tuned: Sequence[CaseResult],
                      run_id: str | None, prompt_md: str | None) -> ModelRow:
    b = {r.case_id: r.score for r in base if r.score is not None}
    t = {r.case_id: r.score for r in tuned if r.score is not None}
    common = [c for c in b if c in t]
    cmp = paired_compare([b[c] for c in common], [t[c] for c in common]) if common else None
    tuned_mean = sum(t.values()) / len(t) if t else None
    passes = [r.passed for r in tuned if r.passed is not None]
    toks = [(r.prompt_tokens, r.completion_tokens) for r in tuned if r.error is None]
    per_req_tokens = sum(a + c for a, c in toks) / len(toks) if toks else None
    price = price_per_token(model.id) if not model.is_local else (0.0, 0.0)
    cost_1k = None
    if price is not None and toks:
        cost_1k = 1000 * sum(a * price[0] + c * price[1] for a, c in toks) / len(toks)
    n_pass = sum(1 for p in passes if p)
    per_success = None if cost_1k is None or not n_pass else cost_1k / 1000 * len(tuned) / n_pass
    lat = [r.latency_s for r in tuned if not r.cached and r.error is None]
    return ModelRow(
        model=model.label, baseline=_r(sum(b.values()) / len(b)) if b else None, tuned=_r(tuned_mean),
        tuned_ci95=tuple(round(x, 4) for x in mean_ci(list(t.values()))) if t else None,  # type: ignore[arg-type]
        gain=_r(cmp.delta) if cmp else None, pass_rate=_r(n_pass / len(passes)) if passes else None,
        tokens_per_request=_r(per_req_tokens, 1), cost_per_1k=_r(cost_1k, 6), cost_per_success=_r(per_success, 8),
        latency_p50_s=_r(percentile(lat, 50), 3), latency_p95_s=_r(percentile(lat, 95), 3),
        significant_gain=bool(cmp and cmp.significant), run_id=run_id, tuned_prompt=prompt_md, scores=t)


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def recommend(rows: Sequence[ModelRow], target: float | None) -> tuple[str | None, str]:
    """The cheapest model whose tuned score is statistically indistinguishable from the best (or meets the
    target), with the numbers that justify it."""
    ok = [r for r in rows if r.error is None and r.tuned is not None]
    if not ok:
        return None, "no model produced a score"
    best = max(ok, key=lambda r: r.tuned or 0.0)
    eligible: list[tuple[ModelRow, str]] = []
    for r in ok:
        if target is not None and (r.tuned or 0) >= target:
            eligible.append((r, f"meets the target {target:.2f}"))
            continue
        if r is best:
            eligible.append((r, "is the best"))
            continue
        common = [c for c in r.scores if c in best.scores]
        cmp = paired_compare([best.scores[c] for c in common], [r.scores[c] for c in common])
        if cmp.p_value >= 0.05:
            eligible.append((r, f"is statistically indistinguishable from the best ({best.model}, "
                                f"{best.tuned:.3f}; paired p = {cmp.p_value:.2f})"))
    if target is not None and not any(why.startswith("meets") for _, why in eligible):
        eligible = [(r, w) for r, w in eligible if not w.startswith("meets")]

    def cost_key(item: tuple[ModelRow, str]) -> tuple[float, float, float]:
        r = item[0]
        return (r.cost_per_1k if r.cost_per_1k is not None else float("inf"), r.tokens_per_request or 0.0,
                -(r.tuned or 0.0))

    choice, why = min(eligible, key=cost_key)
    cost = "price unknown" if choice.cost_per_1k is None else f"${choice.cost_per_1k:.4f} per 1,000 requests"
    others = ", ".join(f"{r.model} ${r.cost_per_1k:.4f}" for r in ok if r is not choice and r.cost_per_1k is not None)
    lo, hi = choice.tuned_ci95 or (float("nan"), float("nan"))
    reason = (f"{choice.model}: tuned score {choice.tuned:.3f} (95% CI {lo:.3f}-{hi:.3f}) {why}, at {cost}"
              + (f" (others: {others})" if others else "") + ".")
    return choice.model, reason


class Comparison:
    def __init__(self, config: CompareConfig, *, on_event: Event | None = None) -> None:
        self.config = cfg = config
        self.on_event: Event = on_event or (lambda kind, data: None)
        self.prompt = load_prompt(cfg.prompt_path)
        work = Workload.load(cfg.data, self.prompt, fractions=cfg.split, seed=cfg.seed)
        self.cases = list(work.cases)
        self.test: list[Case] = work.test
        self.id = "compare-" + new_run_id()
        self.root = runs_root() / self.id

    async def _score(self, model: ModelSpec, prompt: Prompt) -> list[CaseResult]:
        scorer, _ = make_scorer(self.config.scorer, self.cases)
        rep = await evaluate_async(self.test, prompt, get_client(model, role="task"), scorer,
                                   concurrency=self.config.concurrency)
        return list(rep.results)

    def _one(self, model: ModelSpec) -> ModelRow:
        from .optimizer import Optimizer

        cfg = self.config
        self.on_event("model_start", {"model": model.label})
        try:
            if not cfg.tune:
                res = asyncio.run(self._score(model, self.prompt))
                row = _row_from_results(model, res, res, None, self.prompt.to_markdown())
                if row.tuned is None:
                    first = next((r.error for r in res if r.error), "no output")
                    raise RuntimeError(f"no test case could be scored: {first}")
            else:
                opt = Optimizer(run_config(cfg, model), on_event=forward(self.on_event, model=model.label))
                result = opt.run()
                store = opt.store
                assert store is not None
                memo = store.evals()
                base = list(store.results(opt.evaluator.baseline_prompts.primary, "test", memo).values())
                tuned = list(store.results(result.best_prompt, "test", memo).values())
                row = _row_from_results(model, base, tuned, result.run_id, result.best_prompt)
            if row.tuned is None:
                raise RuntimeError("no test case could be scored")
        except Exception as e:  # noqa: BLE001 - one model failing must not lose the others
            row = ModelRow(model=model.label, error=f"{type(e).__name__}: {e}"[:300])
        with (self.root / "rows.jsonl").open("a", encoding="utf-8") as f:  # an interrupted compare keeps these
            f.write(json.dumps(asdict(row)) + "\n")
        self.on_event("model_done", {"model": model.label, "row": asdict(row)})
        return row

    def preflight(self) -> None:
        """Every model id, key and setting, the scorer and the strategy, before any model starts."""
        from .models import resolve_backend
        from .strategies import get_strategy

        cfg = self.config
        for spec in (*cfg.models, cfg.reasoning, cfg.scorer.judge):
            if spec is not None:
                resolve_backend(spec)
        make_scorer(cfg.scorer, self.cases)
        get_strategy(cfg.strategy)

    def run(self) -> CompareResult:
        start = time.monotonic()
        cfg = self.config
        labels = [m.label for m in cfg.models]
        if len(set(labels)) != len(labels):
            raise ConfigError("the same model is listed twice", fix="give each -m a different id or settings")
        self.preflight()
        self.root.mkdir(parents=True, exist_ok=True)
        # held while the comparison runs (the process's end releases it), so `runs list` can tell it from an
        # interrupted one
        lock = hold_lock(self.root / "lock", f"compare {self.id} is running in another process", fix="wait for it")
        try:
            (self.root / "config.json").write_text(json.dumps(public(cfg.model_dump(mode="json")), indent=2),
                                                  encoding="utf-8")
            self.on_event("start", {"compare_id": self.id, "models": labels, "n_test": len(self.test)})
            rows = map_threads(self._one, cfg.models, cfg.parallel)
            transfer = self._transfer(rows) if cfg.transfer else None
            choice, reason = recommend(rows, cfg.target)
            result = CompareResult(self.id, tuple(rows), choice, reason, transfer, len(self.test),
                                   round(time.monotonic() - start, 1))
            (self.root / "compare.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
        finally:
            lock.release()
        self.on_event("done", result.to_json())
        return result

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
                    vals = [r.score for r in res if r.score is not None]
                    matrix[src.model][dst.model] = _r(sum(vals) / len(vals)) if vals else None
        return matrix


def compare(config: CompareConfig, *, on_event: Event | None = None) -> CompareResult:
    """Tune and score every model on the same data (the Python API behind `reflexopt compare`)."""
    return Comparison(config, on_event=on_event).run()


def load_compare(path: Path) -> dict[str, Any]:
    return read_json(path / "compare.json")
