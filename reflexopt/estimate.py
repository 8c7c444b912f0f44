"""What a run is expected to cost before it starts: calls by phase, and USD where prices are known (`--dry-run`
and the run header show it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .agreement import known_calls
from .models import spec_price
from .operators import LLM_OPERATORS, NAMES

if TYPE_CHECKING:
    from .config import OptimizeConfig
    from .evaluator import Evaluator


def estimate(n_val: int, n_test: int, n_train_sample: int, max_trials: int, judged: bool,
             judge_checks: int = 0) -> dict[str, Any]:
    """Rough call count for a run. No candidate is stopped before 15 val cases; there the gate stops most of
    them (measured on the embedded model at 60 val cases: 21 to 27 calls per trial, diagnoses included), so a
    trial costs about 15 + (n_val - 15) / 4 cases. A judge's checks (self-agreement, known answers) cost
    `judge_checks` calls."""
    per_case = 2 if judged else 1
    llm_share = len(LLM_OPERATORS) / len(NAMES)
    per_trial = n_val if n_val <= 15 else 15 + (n_val - 15) / 4
    search = int(max_trials * (per_trial * per_case + llm_share * (2 + 0.3 * n_train_sample * per_case)))
    checks = judge_checks if judged else 0
    total = n_val * per_case + checks + search + 2 * n_test * per_case
    return {"calls_estimate": total, "calls_baseline": n_val * per_case, "calls_judge_checks": checks,
            "calls_search": search, "calls_final_test": 2 * n_test * per_case}


def run_estimate(cfg: OptimizeConfig, r: Evaluator) -> dict[str, Any]:
    """The estimate for a configured run, with a warning when --max-calls cannot cover the baseline and verdict."""
    est = estimate(len(r.val), len(r.test), min(cfg.diagnose_sample, len(r.splits.train)),
                   min(cfg.budget.trial_limit, 60), cfg.scorer.judge is not None,
                   judge_checks=2 * min(cfg.noise_sample, len(r.val))
                   + (known_calls(r.known_cases()) if cfg.noise_sample else 0))
    if cfg.budget.max_calls:
        fixed = est["calls_baseline"] + r.test_reserve
        if cfg.budget.max_calls < fixed:
            est["warning"] = (f"--max-calls {cfg.budget.max_calls} is below the {fixed} calls that scoring the "
                              "starting prompt on val and the final test alone need; the search will not run")
        est["calls_estimate"] = min(est["calls_estimate"], cfg.budget.max_calls)
    est["calls_verdict_reserve"] = r.test_reserve - est["calls_final_test"]
    est.update(n_train=len(r.splits.train), n_val=len(r.val), n_test=len(r.test), max_trials=cfg.budget.trial_limit)
    if cfg.balanced:  # data.split: val and test hold as many cases of each label
        labels = len({c.ideal for c in r.val})
        est["balanced"] = {"labels": labels, "val_per_label": len(r.val) // labels,
                           "test_per_label": len(r.test) // labels}
    est["cost_estimate_usd"] = cost_estimate(cfg, r, est["calls_estimate"])
    return est


def cost_estimate(cfg: OptimizeConfig, r: Evaluator, calls: int) -> float | None:
    specs = [cfg.model] + ([cfg.scorer.judge] if cfg.scorer.judge else [])
    prices = [spec_price(s)[0] for s in specs]
    if any(p is None for p in prices):
        return None
    cases = r.cases
    avg_in = sum(len(c.input_text) for c in cases) / len(cases) / 4 + \
        sum(len(p.text) for p in r.baseline_prompts.values()) / 4
    per = sum((p[0] * (avg_in + 200) + p[1] * 150) for p in prices if p) / len(prices)
    return round(per * calls, 4)
