"""The verdict of a run: baseline and best compared on the test cases (paired bootstrap CI, exact Wilcoxon),
how many of them the comparison used and why any were left out, and the result record every interface reports.

A case whose task call failed for a prompt counts as a failure (score 0) for that prompt: a prompt that makes
the model fail must not gain by dropping its hard cases. A case the scorer could not score (a judge error after
its retries) or that the budget refused is left out of the pair, and counted in `test_cases`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .evaluate import CaseResult
from .stats import PairedComparison, paired_compare


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
    test_cases: dict[str, Any] | None = None  # n, paired, and the cases left out or counted 0, by kind

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta_ci95"] = list(self.delta_ci95)
        d["accepted_path"] = list(self.accepted_path)
        return d


def task_failed(r: CaseResult) -> bool:
    """The task produced no output (its call or the user's program failed), as opposed to a scorer failure."""
    return r.score is None and not r.output and (r.error or "").startswith(("model call failed", "the task failed"))


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
            if r is None:
                counts["refused_for_budget"][side] += 1
                scores.append(None)
            elif r.score is not None:
                scores.append(r.score)
            elif task_failed(r):
                counts["task_failed_scored_0"][side] += 1
                scores.append(0.0)
            else:
                counts["not_scored"][side] += 1
                scores.append(None)
        if scores[0] is not None and scores[1] is not None:
            pairs.append((scores[0], scores[1]))
    cmp = paired_compare([a for a, _ in pairs], [b for _, b in pairs], seed=seed)
    return cmp, {"n": len(test_ids), "paired": len(pairs), **counts}


def coverage_text(cov: dict[str, Any]) -> str:
    """`38 of 40 (2 not scored by the judge; 1 task failure counted as 0)`."""
    notes = []
    for key, what in (("not_scored", "not scored (scorer error)"), ("refused_for_budget", "refused for the budget"),
                      ("task_failed_scored_0", "task failures counted as 0")):
        n = sum(cov.get(key, {}).values())
        if n:
            notes.append(f"{n} {what}")
    return f"{cov['paired']} of {cov['n']}" + (f" ({'; '.join(notes)})" if notes else "")
