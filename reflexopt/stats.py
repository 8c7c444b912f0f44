"""Statistics used to report honestly: bootstrap CIs, paired tests, percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000


def mean_ci(values: Sequence[float], *, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean. A single value (or none) gives a degenerate interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(N_BOOT, x.size))].mean(axis=1)
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


@dataclass(frozen=True)
class PairedComparison:
    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci95: tuple[float, float]
    p_value: float
    test: str
    wins: int
    losses: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05 and self.ci95[0] > 0


def paired_compare(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> PairedComparison:
    """Compare b against a on the same cases: paired bootstrap CI of mean(b - a) and a paired test.

    The test is a Wilcoxon signed-rank test (two-sided, zero differences dropped, Pratt for ties handled by
    scipy); with no non-zero difference the p-value is 1.
    """
    from scipy import stats as st

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    d = y - x
    ci = mean_ci(d, seed=seed) if d.size else (math.nan, math.nan)
    nz = d[d != 0]
    if nz.size == 0:
        p = 1.0
    else:
        p = float(st.wilcoxon(nz, alternative="two-sided", method="auto").pvalue)
    return PairedComparison(n=int(d.size), mean_a=float(x.mean()) if x.size else math.nan,
                            mean_b=float(y.mean()) if y.size else math.nan, delta=float(d.mean()) if d.size else 0.0,
                            ci95=ci, p_value=p, test="wilcoxon signed-rank", wins=int((d > 0).sum()),
                            losses=int((d < 0).sum()))


def worse_than_best(steps: dict[int, float], best: dict[int, float], *, p_threshold: float,
                    min_cases: int) -> bool:
    """The pruning test: is a candidate significantly worse than the best one on the cases scored so far?

    A one-sided Wilcoxon signed-rank test of the per-case differences on the cases both have (zero differences
    split between the ranks, so all-tied 0/1 scores give p = 1), as Optuna's WilcoxonPruner does. Never prunes
    before `min_cases` shared cases, nor a candidate whose mean so far is at least the best one's mean."""
    from scipy import stats as st

    shared = [k for k in steps if k in best]
    if len(shared) < max(2, min_cases) or not best:
        return False
    cur = np.asarray([steps[k] for k in shared], dtype=float)
    ref = np.asarray([best[k] for k in shared], dtype=float)
    if not (np.all(np.isfinite(cur)) and np.all(np.isfinite(ref))):
        return False
    if sum(best.values()) / len(best) <= sum(steps.values()) / len(steps):
        return False
    p = float(st.wilcoxon(cur - ref, alternative="less", zero_method="zsplit").pvalue)
    return p < p_threshold
