"""A prompt change checked against the prompt it replaces (`eval PROMPT --against OLD`), for a CI gate.

Both prompts answer the same cases with the same model and scorer. Their scores are compared pair by pair as an
optimize run compares its starting and returned prompts on test (verdict.paired_on_test: a paired bootstrap CI
of the mean difference and a Wilcoxon signed-rank test; a failed task call counts 0, an unscored case is left
out of the pair). The change is **worse** only when the drop is significant (p < 0.05 and the CI below 0),
**better** only when the gain is, and otherwise "no significant difference": a CI gate that fails on every
lower mean would fail on noise, most of all with a judge. The cases whose score fell are listed worst first,
with both answers, so a reviewer sees what the change broke.

The gate (`gate_reasons`): the change is significantly worse, or the score is below `--fail-under`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import Case
from .evaluate import CaseResult, EvalReport, case_score, mean_tokens
from .stats import holm
from .verdict import p_text, paired_on_test, test_reference

SHOWN = 5  # cases that got worse, listed with both answers


def compare_change(old: Sequence[CaseResult], new: Sequence[CaseResult], *, old_prompt: str,
                   cases: Sequence[Case] = (), scorer_kind: str = "", seed: int = 0) -> dict[str, Any]:
    """`new` (the prompt evaluated) against `old` (the prompt it replaces), on the cases both answered, in the
    order of `new`. With a judge (`scorer_kind`) and references on every case, `reference` holds the same
    answers scored against them (verdict.test_reference), and says when they disagree with the judge."""
    cmp, cover = paired_on_test(old, new, [r.case_id for r in new], seed=seed)
    verdict = change_verdict(cmp.p_value, cmp.ci95)
    before = {r.case_id: r for r in old}
    moved = []
    for r in new:
        o = before.get(r.case_id)
        a, b = (None, None) if o is None else (case_score(o), case_score(r))
        if o is not None and a is not None and b is not None and a != b:
            moved.append((b - a, o, r))
    moved.sort(key=lambda m: m[0])
    worse = [m for m in moved if m[0] < 0]
    return {
        "prompt": old_prompt,
        "verdict": verdict,
        "old_score": round(cmp.mean_a, 4) if cmp.n else None,
        "new_score": round(cmp.mean_b, 4) if cmp.n else None,
        "delta": round(cmp.delta, 4),
        "ci95": [round(cmp.ci95[0], 4), round(cmp.ci95[1], 4)] if cmp.n else None,
        "p_value": cmp.p_value,
        "test": cmp.test,
        "n": cover["n"],
        "paired": cover["paired"],
        "better_cases": sum(1 for m in moved if m[0] > 0),
        "worse_cases": len(worse),
        "prompt_tokens_per_case": {"old": _tokens(old), "new": _tokens(new)},
        "reference": test_reference(scorer_kind, old, new, cases, cmp.delta, seed=seed),
        "worst": [{"case_id": r.case_id, "input": r.input, "ideal": r.ideal, "old_output": o.output,
                   "old_score": o.score, "new_output": r.output or r.error, "new_score": r.score,
                   "reasoning": r.reasoning} for _, o, r in worse[:SHOWN]],
    }


def change_verdict(p_value: float, ci95: Sequence[float]) -> str:
    """"worse" when the drop is significant (p < 0.05, the CI below 0), "better" when the gain is, else "no
    significant difference"."""
    if p_value < 0.05 and ci95[1] < 0:
        return "worse"
    if p_value < 0.05 and ci95[0] > 0:
        return "better"
    return "no significant difference"


def compare_variants(first: EvalReport, first_name: str, variants: Sequence[tuple[str, EvalReport]], *,
                     cases: Sequence[Case] = (), scorer_kind: str = "") -> list[dict[str, Any]]:
    """Several prompts on the same cases (`eval A.md B.md C.md`): one row per prompt, the first included, each
    with its score, CI, pass rate, prompt tokens, cost per success and p95 latency, and every prompt after the
    first compared with it pair by pair (`compare_change`). Their p-values are Holm-adjusted over those
    comparisons (`p_value`; unadjusted: `p_value_raw`) and the verdicts read the adjusted ones: with three
    prompts tried against one, a single p < 0.05 is no longer a finding."""
    changes = [compare_change(first.results, rep.results, old_prompt=first_name, cases=cases,
                              scorer_kind=scorer_kind) for _, rep in variants]
    for change, adjusted in zip(changes, holm([c["p_value"] for c in changes]), strict=True):
        change.update(p_value_raw=change["p_value"], p_value=adjusted, correction=f"Holm over {len(changes)}",
                      verdict=change_verdict(adjusted, change["ci95"] or (0.0, 0.0)))

    def row(name: str, rep: EvalReport, change: dict[str, Any] | None) -> dict[str, Any]:
        s = rep.summary()
        money = s.get("money") or {}
        return {"prompt": name, "score": s["score"], "ci95": s["ci95"], "pass_rate": s["pass_rate"],
                "n_scored": s["n_scored"], "prompt_tokens_per_case": _tokens(rep.results),
                "cost_per_success": money.get("cost_per_success"), "latency_p95_s": s["latency_p95_s"],
                "latency_from_cache": bool(s.get("latency_from_cache")), "change": change}

    return [row(first_name, first, None), *(row(n, rep, c) for (n, rep), c in zip(variants, changes, strict=True))]


def model_matrix(reports: Sequence[tuple[str, str, EvalReport]]) -> list[dict[str, Any]]:
    """Every prompt on every model (`eval A.md B.md -m M1 -m M2`; `reports`: (model id, first prompt, its eval)):
    one row per prompt and model, with its score, CI, pass rate, prompt tokens, cost per success and p95 latency,
    and whether it is the best-scoring prompt on that model (`best_on_model`; ties: each). The prompts are not
    compared across models here: the cases are the same, the answers come from different models."""
    rows = []
    for model, first, rep in reports:
        per = rep.variants or compare_variants(rep, first, ())  # one prompt: its row alone
        top = max((r["score"] for r in per if r["score"] is not None), default=None)
        rows += [{"model": model, **{k: v for k, v in r.items() if k != "change"},
                  "best_on_model": top is not None and r["score"] == top} for r in per]
    return rows


def _tokens(results: Sequence[CaseResult]) -> float | None:
    """Mean prompt tokens per case over the answered cases (what the prompts cost to send; a pipeline sums its
    steps)."""
    tokens = mean_tokens(results)
    return None if tokens is None else round(tokens[0], 1)


def gate_reasons(score: float | None, against: dict[str, Any] | None, fail_under: float | None) -> list[str]:
    """Why the evaluated prompt fails the gate (empty: it passes): significantly worse than the prompt it
    replaces, or a mean score below `fail_under`."""
    out = []
    if against is not None and against["verdict"] == "worse":
        lo, hi = against["ci95"]
        out.append(f"significantly worse than {against['prompt']}: {against['old_score']:.3f} -> "
                   f"{against['new_score']:.3f} (95% CI of the change {lo:+.3f} to {hi:+.3f}, "
                   f"{p_text(against['p_value'])}; {against['worse_cases']} cases worse, {against['better_cases']} "
                   "better)")
    if fail_under is not None and (score is None or score < fail_under):
        out.append(f"score {'none' if score is None else f'{score:.3f}'} is below --fail-under {fail_under:g}")
    return out
