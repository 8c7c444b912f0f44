"""The verdict of a run: baseline and best compared on the test cases (paired bootstrap CI, exact Wilcoxon),
how many of them the comparison used and why any were left out, and the result record every interface reports.

A case whose task call failed for a prompt counts as a failure (score 0) for that prompt: a prompt that makes
the model fail must not gain by dropping its hard cases. A case the scorer could not score (a judge error after
its retries) or that the budget refused is left out of the pair, and counted in `test_cases`.

Which candidate the run returns (`--objective`, `--max-prompt-tokens`): the score alone (the default; of
candidates tied on the best val score, the cheapest), or the cheapest prompt that is not worse than the best on
val.

Every candidate scored on all of val is a point of the score/cost frontier: its val mean, its tokens per request
(prompt and completion, measured on val) and, where the task model's price is known, its cost per 1,000
requests. With `--objective cost`, among candidates that (a) a one-sided paired Wilcoxon test on the val cases
does not show worse than the score-best at alpha 0.05, and (b) score at least the starting prompt on val, the
cheapest wins (by cost per 1,000 requests when prices are known, else by tokens per request). A prompt-token
cap leaves out every candidate above it, under either objective (the starting prompt stays eligible, so a run
never returns a prompt worse than the one it was given)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .agreement import echo_figures
from .data import Case
from .evaluate import (
    CaseResult,
    case_score,
    constant_against,
    corpus_figures,
    mean_tokens,
    money,
    task_failed,
)
from .pool import Candidate, collapsed
from .stats import PairedComparison, noninferiority_p, paired_compare


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
    accepted_path: tuple[str, ...] = ()  # the successive new bests
    lineage: list[dict[str, Any]] | None = None  # the steps that made the returned prompt (pool.steps_to)
    study: str = ""
    unspent_calls: int | None = None  # of --max-calls, when set
    operators: dict[str, int] | None = None  # trials per operator that actually ran
    test_cases: dict[str, Any] | None = None  # n, paired, and the cases left out or counted 0, by kind
    objective: str = "score"
    chosen_by: str = ""  # how the returned candidate was chosen
    frontier: list[dict[str, Any]] | None = None  # candidates scored on all of val: val, tokens, cost per 1k
    money: dict[str, Any] | None = None  # on test, baseline and best: cost per 1,000 requests and per success
    test_labels: dict[str, Any] | None = None  # a label metric on test, baseline and best: macro-F1, F1 by label
    test_echo: dict[str, Any] | None = None  # on test, baseline and best: answers that repeat their input
    test_reference: dict[str, Any] | None = None  # a judged run: the same test answers by a reference metric
    distinct_candidates: int | None = None  # new prompts scored (duplicate trials reuse a known prompt's scores)
    duplicate_trials: int = 0
    reasoner: str = ""  # the model that diagnosed and rewrote, and why that one
    judge: dict[str, Any] | None = None  # self-agreement, verdicts, contradictions, parse errors, structured form
    held_back: list[dict[str, Any]] | None = None  # above the best on val, kept out by a noisy judge's gain bar

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta_ci95"] = list(self.delta_ci95)
        d["accepted_path"] = list(self.accepted_path)
        return d


def paired_on_test(base: Sequence[CaseResult], best: Sequence[CaseResult], test_ids: Sequence[str], *,
                   seed: int) -> tuple[PairedComparison, dict[str, Any]]:
    """Baseline against best on the test cases, in test order, and what the comparison covered."""
    sides = {"baseline": {x.case_id: x for x in base}, "best": {x.case_id: x for x in best}}
    counts: dict[str, dict[str, int]] = {k: {"baseline": 0, "best": 0}
                                         for k in ("task_failed_scored_0", "not_scored", "refused_for_budget")}
    pairs: list[tuple[float, float]] = []
    for cid in test_ids:
        scores: list[float | None] = []
        for side, got in sides.items():
            r = got.get(cid)
            s = None if r is None else case_score(r)
            scores.append(s)
            if r is None or (s is None and r.budget_exhausted):  # never asked, or asked and refused
                counts["refused_for_budget"][side] += 1
            elif task_failed(r):
                counts["task_failed_scored_0"][side] += 1
            elif s is None:
                counts["not_scored"][side] += 1
        if scores[0] is not None and scores[1] is not None:
            pairs.append((scores[0], scores[1]))
    cmp = paired_compare([a for a, _ in pairs], [b for _, b in pairs], seed=seed)
    return cmp, {"n": len(test_ids), "paired": len(pairs), **counts}


async def test_labels(scorer: Any, base: Sequence[CaseResult], best: Sequence[CaseResult], train: Sequence[Case],
                      test: Sequence[Case]) -> dict[str, Any] | None:
    """A label metric's figures on test for both prompts (macro-F1 beside the mean score), and what answering
    the train split's most common label to every test case scores, against the tuned prompt (constant_against); or
    None."""
    b, t = corpus_figures(scorer, base), corpus_figures(scorer, best)
    if b is None or t is None:
        return None
    return {"baseline": b, "best": t, "constant": await constant_against(scorer, train, test, best)}


def constant_gap_text(const: Mapping[str, Any], *, short: bool = False,
                      subject: str = "the tuned prompt") -> str | None:
    """`the tuned prompt is above it by +0.038 on the same 80 cases (p = 0.41): not significant, so this test
    split does not show that it tells the cases apart better than one answer does`, for a tuned prompt above
    the constant answer (`short`: up to "not significant"); None when it is not above it, or the run predates
    the comparison."""
    d, p = const.get("tuned_delta"), const.get("tuned_p")
    if d is None or p is None or d <= 0:
        return None
    head = f"{subject} is above it by {d:+.3f} on the same {const['tuned_n']} cases ({p_text(p)})"
    if p < ALPHA:
        return head
    if short:
        return head + ": not significant"
    return (head + ": not significant, so this test split does not show that it tells the cases apart better "
            "than one answer does")


def test_echo(base: Sequence[CaseResult], best: Sequence[CaseResult]) -> dict[str, Any] | None:
    """Both prompts' answers on test that repeat their input unchanged where the reference changes it
    (agreement.echo_figures), or None when neither prompt's do."""
    b, t = echo_figures(base), echo_figures(best)
    return {"baseline": b, "best": t} if b or t else None


REFERENCE_DISAGREES = 0.05  # a reference metric's change of at least this, against the judge's direction


def test_reference(scorer_kind: str, base: Sequence[CaseResult], best: Sequence[CaseResult],
                   test: Sequence[Case], judge_delta: float, *, seed: int) -> dict[str, Any] | None:
    """With a judge, the same test answers of both prompts scored against their references by the metric
    reflexopt would pick for them (metrics.default_metric: token F1 for short references, ROUGE-L for long,
    `contains` for labels; no calls), with its paired comparison. `disagrees`: the references move at least
    REFERENCE_DISAGREES the other way from the judge's score, a sign that the judge is not grading the task
    (seen: a small judge that faulted the order of a list the task leaves free). None without a judge, or when
    a test case has no reference."""
    if scorer_kind != "judge" or not test or any(c.ideal is None for c in test):
        return None
    from .metrics import MetricScorer, default_metric

    name = default_metric(test)
    metric, cases = MetricScorer(name, test), {c.id: c for c in test}

    def scores(results: Sequence[CaseResult]) -> dict[str, float]:
        out = {}
        for r in results:  # an answer the judge could not grade is still an answer the references can
            if r.case_id not in cases or not (r.output or task_failed(r) or r.error is None):
                continue  # never answered (the budget refused the task call)
            out[r.case_id] = 0.0 if task_failed(r) else float(metric.score_sync(cases[r.case_id], r.output).value
                                                             or 0.0)
        return out

    a, b = scores(base), scores(best)
    ids = [c.id for c in test if c.id in a and c.id in b]
    cmp = paired_compare([a[i] for i in ids], [b[i] for i in ids], seed=seed)
    return {"metric": name, "n": len(ids), "baseline": round(cmp.mean_a, 4), "best": round(cmp.mean_b, 4),
            "delta": round(cmp.delta, 4), "ci95": [round(cmp.ci95[0], 4), round(cmp.ci95[1], 4)],
            "p_value": cmp.p_value, "disagrees": bool(ids) and cmp.delta * judge_delta <= 0
            and abs(cmp.delta) >= REFERENCE_DISAGREES and (judge_delta != 0 or cmp.significant)}


def reference_text(ref: dict[str, Any], judge: tuple[float, float]) -> str:
    """How the views say what the references say of the judged test answers."""
    line = (f"by {ref['metric']} against the references: {ref['baseline']:.3f} -> {ref['best']:.3f} "
            f"({ref['delta']:+.3f}, {p_text(ref['p_value'])})")
    if ref["disagrees"]:
        line += (f"; the judge's score went {judge[0]:.3f} -> {judge[1]:.3f}: the judge and the references "
                 "disagree, so read the judge's reasons before trusting either")
    return line


def test_money(base: Sequence[CaseResult], best: Sequence[CaseResult], price: tuple[float, float] | None,
               source: str) -> dict[str, Any]:
    """The money figures of the verdict: each prompt's cost per 1,000 requests and per successful task on test,
    at the task model's price, and where the price came from."""
    return {"baseline": money(base, price), "best": money(best, price), "price_source": source}


def p_text(p: float) -> str:
    """A p-value as every view shows it: `p = 0.0123`, or `p < 0.0001` (never `p = 0`)."""
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.4f}"


def coverage_text(cov: dict[str, Any]) -> str:
    """`38 of 40 (2 not scored by the judge; 1 task failure counted as 0)`."""
    notes = []
    for key, what in (("not_scored", "not scored (scorer error)"), ("refused_for_budget", "refused for the budget"),
                      ("task_failed_scored_0", "task failures counted as 0")):
        n = sum(cov.get(key, {}).values())
        if n:
            notes.append(f"{n} {what}")
    rejudged = cov.get("rejudged") or {}
    if rejudged.get("verdicts"):
        notes.append(f"{rejudged['verdicts']} verdicts re-judged, {rejudged['then_scored']} then scored")
    return f"{cov['paired']} of {cov['n']}" + (f" ({'; '.join(notes)})" if notes else "")


ALPHA = 0.05


@dataclass(frozen=True)
class Point:
    """One candidate on the frontier."""

    id: str
    val: float
    prompt_tokens: float
    completion_tokens: float
    cost_per_1k: float | None
    within_cap: bool
    not_worse: bool = False
    chosen: bool = False

    @property
    def tokens(self) -> float:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def point(c: Candidate, results: Mapping[str, CaseResult], price: tuple[float, float] | None,
          max_prompt_tokens: int | None) -> Point | None:
    """A candidate's point, from its recorded val results (None when it has none with token counts)."""
    tokens = mean_tokens(r for cid, r in results.items() if cid in c.val)
    if tokens is None:
        return None
    pt, ct = tokens
    cost = None if price is None else 1000 * (pt * price[0] + ct * price[1])
    return Point(c.id, c.val_mean, pt, ct, cost, max_prompt_tokens is None or pt <= max_prompt_tokens)


def cheaper_variants(c: Candidate) -> list[Candidate]:
    """`--objective cost`: cheaper versions of the candidate a run would return, made without a model call: each
    of its prompts with one demo fewer (the likeliest to be not worse), one demo per answer shown (every label
    still shown once, where it shows a label twice or more), half its demos (the larger saving) and none, in that
    order. They are scored on val like any candidate (stopped early when clearly worse), and `choose` keeps one
    only if it is not worse than the best there."""
    out: list[Candidate] = []
    seen = {c.key}
    for name in c.prompts.names:
        p = c.prompts[name]
        k = len(p.demos)
        firsts = [i for i, d in enumerate(p.demos) if all(e.output != d.output for e in p.demos[:i])]
        keeps: dict[str, list[int]] = {f"d{k - 1}": list(range(k - 1)), f"d{len(firsts)}u": firsts,
                                       f"d{k // 2}": list(range(k // 2)), "d0": []}
        for tag, kept in keeps.items():
            if len(kept) >= k or (tag.endswith("u") and len(kept) < 2):
                continue
            label = f"{c.id}.{name}.{tag}" if len(c.prompts.names) > 1 else f"{c.id}.{tag}"
            demos = tuple(p.demos[i] for i in kept)
            what = "one demo per answer" if tag.endswith("u") else f"{len(kept)} of its {k} demos"
            params: dict[str, Any] = {"demos_kept": len(kept)}
            if len(c.prompts.names) > 1:
                params["target"] = name
            v = Candidate(label, c.prompts.replace(name, replace(p, demos=demos)), "trim", c.id,
                          f"{c.id} with {what} (a cheaper variant for --objective cost)", params)
            if v.key not in seen:
                seen.add(v.key)
                out.append(v)
    return out


def choose(best: Candidate, baseline: Candidate, pool: Sequence[Candidate], n_val: int, *, objective: str,
           max_prompt_tokens: int | None, results: Callable[[Candidate], Mapping[str, CaseResult]],
           price: tuple[float, float] | None, margin: float = 0.05) -> tuple[Candidate, list[Point], str]:
    """The candidate the run returns, the frontier (candidates scored on all of val, cheapest first), and one
    line saying how it was chosen. With `objective="cost"`, a candidate counts as not worse than the best when it
    scores at least as high on val, or when a one-sided paired test on the val cases shows it loses less than
    `margin` (non-inferiority, the lower half of TOST): "not shown worse" on 60 cases would let a 0.1 drop
    through."""
    baseline = next((c for c in pool if c.id == "baseline"), baseline)
    full = [c for c in pool if c.state == "complete" and len(c.val) == n_val and c.id != "baseline"]
    full.insert(0, baseline)
    pts = {c.id: p for c in full if (p := point(c, results(c), price, max_prompt_tokens)) is not None}
    by_id = {c.id: c for c in full}

    def allowed(c: Candidate) -> bool:
        """Within the prompt-token cap. Without a cap every candidate is: one scored by another process (a
        worker) has no token counts in this run folder, and must not lose to a worse one that has."""
        p = pts.get(c.id)
        return c.id == "baseline" or max_prompt_tokens is None or (p is not None and p.within_cap)

    by_cost = any(p.cost_per_1k for p in pts.values())  # a price that is 0 everywhere (local models) ranks nothing

    def price_of(c: Candidate | Point) -> tuple[float, float, float]:
        p = pts[c.id]
        return ((p.cost_per_1k or 0.0) if by_cost else p.tokens, p.tokens, -p.val)

    top = best if allowed(best) else max((c for c in full if allowed(c)), key=lambda c: c.val_mean,
                                         default=baseline)
    why = "the best val score" if top is best else f"the best val score within {max_prompt_tokens} prompt tokens"
    chosen = top
    if objective == "cost":
        ref = {i: s for i, s in enumerate(top.val[k] for k in sorted(top.val))}
        fits = []
        for c in full:
            if not allowed(c) or c.id not in pts or c.val_mean < baseline.val_mean:
                continue
            mine = {i: c.val.get(k, 0.0) for i, k in enumerate(sorted(top.val))}
            diffs = [mine[i] - ref[i] for i in ref]
            # scoring at least the best on val is not worse there; a lower score must be shown to lose < margin
            if c is top or c.val_mean >= top.val_mean or noninferiority_p(diffs, margin) < ALPHA:
                fits.append(c)
        if fits:
            chosen = min(fits, key=price_of)
            unit = "cost per 1,000 requests" if by_cost else "tokens per request"
            why = (f"the lowest {unit} among candidates shown within {margin:g} of {top.id} on val (one-sided "
                   f"paired non-inferiority test, alpha {ALPHA})")
        fit_ids = {c.id for c in fits}
    else:
        fit_ids = set()
        # candidates the search made with the same val score as the best: nothing on val tells them apart, and
        # the one that costs less per request serves the same score for less (compared only with candidates
        # alike in whether they answer one label whatever the case: a varied best never gives way to a one-label one)
        ties = [c for c in full if c.id != "baseline" and c.id in pts and allowed(c) and c.val_mean == top.val_mean
                and collapsed(c) == collapsed(top)]
        if top.id != "baseline" and top.id in pts and len(ties) > 1:
            cheapest = min(ties, key=price_of)
            if price_of(cheapest)[:2] < price_of(top)[:2]:
                chosen = cheapest
                unit = "cost per 1,000 requests" if by_cost else "tokens per request"
                why += f"; of {len(ties)} candidates tied on it, the lowest {unit}"
    frontier = sorted((Point(**{**asdict(p), "not_worse": p.id in fit_ids, "chosen": p.id == chosen.id})
                       for p in pts.values()), key=price_of)
    return by_id.get(chosen.id, chosen), frontier, why
