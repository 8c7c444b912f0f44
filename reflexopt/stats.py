"""Statistics used to report honestly: bootstrap CIs, paired tests, percentiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000
CHUNK = 1 << 20  # resample indices drawn at once: memory stays near 16 MB whatever the number of rows


def mean_ci(values: Sequence[float], *, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean. A single value (or none) gives a degenerate interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    # the N_BOOT x n index matrix in blocks of rows, drawn in order from one generator: the same resamples (and
    # so the same CI for a seed) as drawing it whole, without its n x 80 KB of memory
    rows = max(2, CHUNK // x.size // 2 * 2)
    means = np.empty(N_BOOT)
    for start in range(0, N_BOOT, rows):
        k = min(rows, N_BOOT - start)
        means[start:start + k] = x[rng.integers(0, x.size, size=(k, x.size))].mean(axis=1)
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


EXACT_MAX = 50  # up to this many non-zero differences the p-value is exact, as in scipy's `method="auto"`


def _midranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of x, and the size of each group of tied values."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    sizes = np.diff(np.r_[starts, xs.size])
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(starts + (sizes + 1) / 2, sizes)
    return ranks, sizes


def signed_rank_p(d: np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test on non-zero differences `d` (numpy only: the verdict
    does not wait for scipy's import, about 1 s).

    Up to EXACT_MAX differences it is exact: the null distribution of the positive rank sum over all 2^n sign
    flips, counted by dynamic programming over doubled (integral) midranks. That is the distribution scipy's
    `wilcoxon(method="auto")` uses without ties, and the one its permutation test enumerates for tied samples
    of up to 13 (about 2 s at n = 13); between 14 and 50 tied differences scipy switches to the normal
    approximation, and this stays exact. Above EXACT_MAX: scipy's normal approximation with the tie correction
    (no continuity correction)."""
    n = d.size
    ranks, ties = _midranks(np.abs(d))
    if n > EXACT_MAX:
        r_plus = float(ranks[d > 0].sum())
        var = (n * (n + 1) * (2 * n + 1) - float((ties**3 - ties).sum()) / 2) / 24
        z = (r_plus - n * (n + 1) / 4) / math.sqrt(var)
        return float(min(1.0, math.erfc(abs(z) / math.sqrt(2))))
    ranks2 = np.rint(2 * ranks).astype(np.int64)
    counts = np.zeros(int(ranks2.sum()) + 1)
    counts[0] = 1.0
    for r in ranks2:
        counts[r:] = counts[r:] + counts[: counts.size - r]
    probs = counts / counts.sum()
    observed = int(ranks2[d > 0].sum())
    return float(min(1.0, 2 * min(probs[: observed + 1].sum(), probs[observed:].sum())))


def paired_compare(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> PairedComparison:
    """Compare b against a on the same cases: paired bootstrap CI of mean(b - a) and a paired test.

    The test is a Wilcoxon signed-rank test (two-sided, zero differences dropped, midranks for ties; see
    signed_rank_p); with no non-zero difference the p-value is 1.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    d = y - x
    ci = mean_ci(d, seed=seed) if d.size else (math.nan, math.nan)
    nz = d[d != 0]
    p = signed_rank_p(nz) if nz.size else 1.0
    return PairedComparison(n=int(d.size), mean_a=float(x.mean()) if x.size else math.nan,
                            mean_b=float(y.mean()) if y.size else math.nan, delta=float(d.mean()) if d.size else 0.0,
                            ci95=ci, p_value=p, test="wilcoxon signed-rank", wins=int((d > 0).sum()),
                            losses=int((d < 0).sum()))


def equivalence_p(d: Sequence[float], margin: float) -> float:
    """TOST p-value that the mean paired difference `d` lies within (-margin, +margin): the larger of the two
    one-sided p-values (noninferiority_p of `d` and of its negation). Below alpha, the two are shown equivalent
    within the margin (the 1 - 2 alpha CI of the difference lies inside it). With no spread, the mean itself
    decides."""
    return max(noninferiority_p(d, margin), noninferiority_p([-v for v in d], margin))


def noninferiority_p(d: Sequence[float], margin: float) -> float:
    """One-sided p-value that the mean paired difference `d` (candidate minus reference) is above -margin: below
    alpha, the candidate is shown to lose less than `margin` (the lower half of TOST). With no spread, the mean
    itself decides."""
    from scipy import stats as st

    x = np.asarray(d, dtype=float)
    if x.size < 2:
        return 1.0
    if float(x.max() - x.min()) == 0.0:  # no spread (exactly: a float std of equal values need not be 0)
        return 0.0 if float(x.mean()) > -margin else 1.0
    return float(st.ttest_1samp(x + margin, 0.0, alternative="greater").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error over all of them), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_gain_bar(mine: Mapping[str, float], best: Mapping[str, float], *, k: float = 2.0) -> float:
    """The smallest mean gain of `mine` over `best` (case -> score, on the cases both have) that judge noise does not
    explain: `k` standard errors of the per-case differences (a paired t above `k`; inf on fewer than 2 cases).

    A judge's noise in a difference of two val means is read from the differences themselves: a case whose
    output did not change, or whose verdict at temperature 0 did not move, adds none, and a judge that scores
    each output apart adds its own spread. The self-agreement redraws (at temperature 0.7, half with the judge
    prompt paraphrased) measure a sampled verdict's noise, which on a small judge was about twice what the
    temperature-0 verdicts of two candidates differed by (scripts/results/dev_judge_gate.md)."""
    shared = [c for c in mine if c in best]
    if len(shared) < 2:
        return math.inf
    d = np.asarray([mine[c] - best[c] for c in shared], dtype=float)
    return k * float(d.std(ddof=1)) / math.sqrt(len(d))


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


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (midranks for ties); None with fewer than 3 pairs or no spread on a side."""
    from scipy import stats as st

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return float(st.spearmanr(a, b).statistic)


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two pass/fail raters on the same cases: agreement beyond what their pass rates give by
    chance. None with no cases, or when chance agreement is already total (both always say the same thing)."""
    if not a or len(a) != len(b):
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance >= 1 else (observed - chance) / (1 - chance)
