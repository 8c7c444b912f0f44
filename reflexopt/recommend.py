"""One model's row in a comparison (score, cost per 1,000 requests and per success, latency) from its scored
test cases, and the recommendation: the cheapest model shown to be as good as the best within a margin (a TOST
equivalence test on the paired test cases, Holm-corrected over the models compared), or meeting the target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .agreement import echo_figures, echo_text
from .config import ModelSpec
from .evaluate import CaseResult, case_scores, counted_failures, latency_sample, mean_tokens, money, pass_flags
from .models import spec_price
from .stats import equivalence_p, holm, mean_ci, paired_compare, percentile

MARGIN = 0.05  # default equivalence margin: within 5 points of the best counts as as good


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
    price_source: str = ""  # where the price came from: model setting, litellm price map, local model, unknown
    load: list[dict[str, Any]] | None = None  # the load test, one entry per concurrency level
    cost_per_success: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_from_cache: bool = False  # every answer came from the cache: as measured when each was paid for
    significant_gain: bool = False
    run_id: str | None = None
    tuned_prompt: str | None = None
    error: str | None = None
    echo: dict[str, Any] | None = None  # the tuned prompt's test answers that repeat their input (agreement.py)
    task_failures: int = 0  # test cases whose call failed with the tuned prompt (counted as 0 in `tuned`)
    scores: dict[str, float] = field(default_factory=dict, repr=False)  # per test case, tuned prompt


def gpu_hour_cost(model: ModelSpec, tuned: Sequence[CaseResult],
                  throughput_rps: float | None) -> tuple[float | None, str]:
    """USD per request of a self-hosted model priced per GPU-hour, through the throughput measured in this run:
    the load test's best level when one ran, else one request at a time (1 / mean latency of the tuned prompt's
    uncached calls, which overstates the cost of a server that answers several at once); and where it came from."""
    assert model.gpu_hour is not None
    lat = [r.latency_s for r in tuned if not r.cached and r.error is None and r.latency_s > 0]
    rps, how = (throughput_rps, "load test, best level") if throughput_rps else (
        (len(lat) / sum(lat), "one request at a time; compare --load measures it under concurrency") if lat
        else (None, ""))
    base = f"${model.gpu_hour:g} per GPU-hour" + (f" ({model.price_from})" if model.price_from else "")
    if not rps:
        return None, base + ": no throughput measured (every answer came from the cache; run compare --load)"
    return model.gpu_hour / 3600 / rps, f"{base} at {rps:.2f} requests/s ({how})"


def row_from_results(model: ModelSpec, base: Sequence[CaseResult], tuned: Sequence[CaseResult],
                     run_id: str | None, prompt_md: str | None, *, throughput_rps: float | None = None) -> ModelRow:
    b, t = case_scores(base), case_scores(tuned)  # a task failure counts 0, as in the run's verdict
    common = [c for c in b if c in t]
    cmp = paired_compare([b[c] for c in common], [t[c] for c in common]) if common else None
    tuned_mean = sum(t.values()) / len(t) if t else None
    passes = pass_flags(tuned)
    toks = mean_tokens(tuned)
    per_req_tokens = None if toks is None else sum(toks)
    price, price_source = spec_price(model)
    flat = None
    if price is None and model.gpu_hour is not None and toks:
        flat, price_source = gpu_hour_cost(model, tuned, throughput_rps)
    m = money(tuned, price, per_request=flat) or {}
    cost_1k, per_success = m.get("cost_per_1k"), m.get("cost_per_success")
    n_pass = sum(1 for p in passes if p)
    lat, from_cache = latency_sample(tuned, failed=False)
    return ModelRow(
        model=model.label, baseline=_r(sum(b.values()) / len(b)) if b else None, tuned=_r(tuned_mean),
        tuned_ci95=tuple(round(x, 4) for x in mean_ci(list(t.values()))) if t else None,  # type: ignore[arg-type]
        gain=_r(cmp.delta) if cmp else None, pass_rate=_r(n_pass / len(passes)) if passes else None,
        tokens_per_request=_r(per_req_tokens, 1), cost_per_1k=_r(cost_1k, 6), cost_per_success=_r(per_success, 8),
        latency_p50_s=_r(percentile(lat, 50), 3), latency_p95_s=_r(percentile(lat, 95), 3),
        latency_from_cache=from_cache,
        significant_gain=bool(cmp and cmp.significant), run_id=run_id, tuned_prompt=prompt_md, scores=t,
        price_source=price_source, echo=echo_figures(tuned), task_failures=counted_failures(tuned))


def failure_notes(rows: Sequence[dict[str, Any]], n_test: int) -> list[str]:
    """One line per compared model (a row as stored) whose tuned prompt's test calls failed on some cases: they
    count 0 in its score, which the reader should know."""
    return [f"{r['model']}: {r['task_failures']} of {n_test} test calls failed, counted as 0" for r in rows
            if not r.get("error") and r.get("task_failures")]


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


@dataclass(frozen=True)
class Constraints:
    """Hard limits a recommended model must meet (`compare --max-p95 --max-cost-per-1k --min-score`)."""

    max_p95_s: float | None = None
    max_cost_per_1k: float | None = None
    min_score: float | None = None

    def violation(self, r: ModelRow) -> str | None:
        """Why `r` is ruled out, in a few words (None: it meets every limit)."""
        if self.min_score is not None and (r.tuned or 0.0) < self.min_score:
            return f"tuned score {r.tuned:.3f} < --min-score {self.min_score:g}"
        if self.max_cost_per_1k is not None:
            if r.cost_per_1k is None:
                return "price unknown, so --max-cost-per-1k cannot be checked (give -m ID@price_in=,price_out=)"
            if r.cost_per_1k > self.max_cost_per_1k:
                return f"${r.cost_per_1k:.4f} per 1,000 requests > --max-cost-per-1k {self.max_cost_per_1k:g}"
        if self.max_p95_s is not None:
            if r.latency_p95_s is None:
                return ("no latency measured (every answer came from a cache that kept none), so --max-p95 cannot "
                        "be checked")
            if r.latency_p95_s > self.max_p95_s:
                return f"latency p95 {r.latency_p95_s:.2f} s > --max-p95 {self.max_p95_s:g} s"
        return None


def selection_adjusted(rows: Sequence[ModelRow], *, splits: int = 200, seed: int = 0) -> dict[str, Any] | None:
    """The winner's curse, measured: the best model's test score is the maximum of several noisy means, so it
    overstates what the model picked this way will score. Over `splits` random halvings of the test cases that
    every model scored, pick the best model on one half and score it on the other; the mean of those scores is
    an honest estimate of the pick's score, and how often the pick is the overall best says how stable the choice
    is. None with fewer than two models or four shared cases."""
    import random

    ok = [r for r in rows if r.error is None and r.scores]
    if len(ok) < 2:
        return None
    shared = sorted(set.intersection(*(set(r.scores) for r in ok)))
    if len(shared) < 4:
        return None
    best = max(ok, key=lambda r: r.tuned or 0.0)
    rng = random.Random(seed)
    held, same = [], 0
    for _ in range(splits):
        a = set(rng.sample(shared, len(shared) // 2))
        b = [c for c in shared if c not in a]
        pick = max(ok, key=lambda r: sum(r.scores[c] for c in a))
        held.append(sum(pick.scores[c] for c in b) / len(b))
        same += pick is best
    return {"best": best.model, "best_score": best.tuned, "adjusted": round(sum(held) / len(held), 4),
            "pick_is_best": round(same / splits, 3), "splits": splits, "cases": len(shared)}


def recommend(rows: Sequence[ModelRow], target: float | None, margin: float = MARGIN,
              constraints: Constraints | None = None) -> tuple[str | None, str]:
    """The cheapest model shown to be as good as the best within `margin` (TOST on the paired test cases at
    alpha 0.05, Holm-corrected over the models compared with the best), or meeting the target; with the numbers
    that justify it. A difference that is merely not significant is not evidence of equivalence: such a model
    is not recommended on that ground, and the reason says so."""
    ok = [r for r in rows if r.error is None and r.tuned is not None]
    if not ok:
        return None, "no model produced a score"
    ruled = [(r, why) for r in ok if (why := (constraints or Constraints()).violation(r)) is not None]
    out = "" if not ruled else " Ruled out: " + "; ".join(f"{r.model}: {why}" for r, why in ruled) + "."
    ok = [r for r in ok if all(r is not x for x, _ in ruled)]
    if not ok:
        return None, "no model meets the constraints." + out
    best = max(ok, key=lambda r: r.tuned or 0.0)
    others = [r for r in ok if r is not best]
    raw = []
    for r in others:
        common = [c for c in r.scores if c in best.scores]
        raw.append(equivalence_p([r.scores[c] - best.scores[c] for c in common], margin))
    adjusted = dict(zip((id(r) for r in others), holm(raw)))
    fam = f"TOST, margin {margin:.2f}, Holm-corrected over {len(others)}" if len(others) > 1 else \
        f"TOST, margin {margin:.2f}"
    eligible: list[tuple[ModelRow, str]] = []
    unshown: list[str] = []
    for r in ok:
        if target is not None and (r.tuned or 0) >= target:
            eligible.append((r, f"meets the target {target:.2f}"))
            continue
        if r is best:
            eligible.append((r, "is the best"))
            continue
        p = adjusted[id(r)]
        if p < 0.05:
            eligible.append((r, f"is as good as the best ({best.model}, {best.tuned:.3f}) within {margin:.2f} "
                                f"({fam}: p = {p:.3f})"))
        elif (r.cost_per_1k or 0.0) < (best.cost_per_1k or 0.0):
            unshown.append(f"{r.model} ({r.tuned:.3f}: not shown within {margin:.2f} of the best, p = {p:.2f})")
    if target is not None and not any(why.startswith("meets") for _, why in eligible):
        eligible = [(r, w) for r, w in eligible if not w.startswith("meets")]

    def cost_key(item: tuple[ModelRow, str]) -> tuple[float, float, float]:
        r = item[0]
        return (r.cost_per_1k if r.cost_per_1k is not None else float("inf"), r.tokens_per_request or 0.0,
                -(r.tuned or 0.0))

    choice, why = min(eligible, key=cost_key)
    cost = "price unknown" if choice.cost_per_1k is None else f"${choice.cost_per_1k:.4f} per 1,000 requests"
    prices = ", ".join(f"{r.model} ${r.cost_per_1k:.4f}" for r in ok if r is not choice and r.cost_per_1k is not None)
    lo, hi = choice.tuned_ci95 or (float("nan"), float("nan"))
    reason = (f"{choice.model}: tuned score {choice.tuned:.3f} (95% CI {lo:.3f}-{hi:.3f}) {why}, at {cost}"
              + (f" (others: {prices})" if prices else "") + "."
              + (f" Cheaper, but no significant difference found, which is not equivalence: {'; '.join(unshown)}."
                 if unshown and choice is best else "") + out)
    if choice.echo and choice.echo["passed"]:
        reason += (f" Check before trusting it: its tuned prompt {echo_text(choice.echo)}, so its score may be the "
                   "scorer's, not the task's.")
    return choice.model, reason


