"""The verdict of a run: baseline and best compared on the test cases both scored (paired bootstrap CI, exact
Wilcoxon), and the result record every interface reports."""

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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta_ci95"] = list(self.delta_ci95)
        d["accepted_path"] = list(self.accepted_path)
        return d


def paired_on_test(base: Sequence[CaseResult], best: Sequence[CaseResult], *, seed: int) -> PairedComparison:
    """Baseline against best on the test cases both scored."""
    b_scores = {x.case_id: x.score for x in base if x.score is not None}
    n_scores = {x.case_id: x.score for x in best if x.score is not None}
    common = [cid for cid in b_scores if cid in n_scores]
    return paired_compare([b_scores[c] for c in common], [n_scores[c] for c in common], seed=seed)
