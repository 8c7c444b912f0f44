from __future__ import annotations

import math

import pytest
from scipy import stats as st

from reflexopt.stats import mean_ci, paired_compare, paired_gain_bar, percentile


def test_mean_ci_degenerate_and_covering() -> None:
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert math.isnan(mean_ci([])[0])
    lo, hi = mean_ci([0, 1] * 50)
    assert lo < 0.5 < hi
    # the bootstrap interval of a mean of 100 Bernoulli(0.5) draws is about +-1.96*0.05
    assert hi - lo == pytest.approx(2 * 1.96 * 0.05, abs=0.03)


def test_paired_compare_known_values() -> None:
    a, b = [0.0] * 10, [1.0] * 10
    c = paired_compare(a, b)
    assert c.delta == 1.0 and c.ci95 == (1.0, 1.0) and c.wins == 10 and c.losses == 0
    assert c.p_value == pytest.approx(2 / 2**10)  # exact two-sided signed-rank: all 10 differences positive
    assert c.significant


def test_paired_compare_matches_scipy_and_handles_no_change() -> None:
    a = [0.1, 0.4, 0.35, 0.8, 0.5, 0.2, 0.9, 0.3, 0.6, 0.7, 0.15, 0.45]
    b = [0.3, 0.35, 0.6, 0.9, 0.65, 0.5, 0.85, 0.55, 0.8, 0.75, 0.4, 0.7]
    c = paired_compare(a, b)
    d = [y - x for x, y in zip(a, b)]
    assert c.p_value == pytest.approx(st.wilcoxon(d).pvalue)
    assert c.delta == pytest.approx(sum(d) / len(d))
    assert c.ci95[0] < c.delta < c.ci95[1]
    same = paired_compare([1, 0, 1], [1, 0, 1])
    assert same.p_value == 1.0 and same.delta == 0 and not same.significant


def test_negative_change_is_not_significant_gain() -> None:
    c = paired_compare([1.0] * 12, [0.0] * 12)
    assert c.delta == -1 and c.p_value < 0.01 and not c.significant


def test_percentile() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_pruning_test_matches_optunas_wilcoxon_pruner() -> None:
    """The in-process pruning test decides as Optuna's WilcoxonPruner on the same scores (it replaced it)."""
    import random

    import optuna

    from reflexopt.stats import worse_than_best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(3)
    agree = 0
    for k in range(40):
        n = rng.randint(10, 40)
        best = {i: float(rng.random() < 0.7) for i in range(n)}
        p_cur = rng.choice([0.2, 0.5, 0.7, 0.9])
        seen = rng.randint(5, n)
        cur = {i: float(rng.random() < p_cur) for i in rng.sample(range(n), seen)}
        study = optuna.create_study(direction="maximize",
                                    pruner=optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=8))
        study.add_trial(optuna.trial.create_trial(value=sum(best.values()) / n, intermediate_values=best,
                                                  params={}, distributions={}))
        t = study.ask()
        for step, v in cur.items():
            t.report(v, step)
        ours = worse_than_best(cur, best, p_threshold=0.1, min_cases=8)
        assert ours == t.should_prune(), (k, cur, best)
        agree += ours
    assert 0 < agree < 40  # both outcomes occur: the comparison is not vacuous



def test_signed_rank_p_equals_scipy_where_scipy_is_exact_and_enumeration_beyond():
    """numpy-only p-values: scipy's on every path where scipy is exact (untied up to 50 differences, tied up to
    13, which scipy enumerates) or approximate (above 50); on 14 to 16 tied differences, where scipy falls back
    to the normal approximation, the p-value of enumerating all 2^n sign flips."""
    import itertools

    import numpy as np

    from reflexopt.stats import _midranks, signed_rank_p

    rng = np.random.default_rng(7)
    tied = [np.array([1.0]), np.array([1.0, 1.0]), np.array([-1.0] * 13), np.array([1.0, -1.0, 0.5] * 4)]
    tied += [rng.choice([-1.0, -0.5, 0.5, 1.0, 2.0], size=int(rng.integers(2, 11))) for _ in range(40)]
    untied = [rng.normal(size=int(rng.integers(1, 51))) for _ in range(40)]
    large = [rng.choice([-1.0, 0.5, 1.0], size=int(rng.integers(51, 300))) for _ in range(10)]
    large += [rng.normal(size=int(rng.integers(51, 300))) for _ in range(10)]
    for d in tied + untied + large:  # scipy enumerates 2^n flips for tied d: up to 2 s a sample at n = 13
        assert signed_rank_p(d) == pytest.approx(float(st.wilcoxon(d, method="auto").pvalue), rel=1e-9, abs=1e-12)
    for n in (14, 15, 16):
        d = rng.choice([-1.0, 1.0, 2.0], size=n)
        ranks = _midranks(np.abs(d))[0]
        flips = np.array(list(itertools.product([0.0, 1.0], repeat=n)))
        null = flips @ ranks
        observed = ranks[d > 0].sum()
        want = min(1.0, 2 * min((null <= observed + 1e-9).mean(), (null >= observed - 1e-9).mean()))
        assert signed_rank_p(d) == pytest.approx(want, abs=1e-12)
    assert paired_compare([0.0] * 13, [1.0] * 13).p_value == pytest.approx(
        float(st.wilcoxon(np.ones(13), method="auto").pvalue), abs=1e-12)


def test_the_bootstrap_ci_keeps_memory_bounded_and_the_same_interval() -> None:
    """The CI drew its 10,000 x n resample matrix at once: 155 KB per row (3 GB at 20k rows). Drawn in blocks,
    memory stays flat and the interval for a seed is the one drawing it whole gives."""
    import tracemalloc

    import numpy as np

    from reflexopt.stats import N_BOOT, mean_ci

    x = np.random.default_rng(7).integers(0, 2, 5000).astype(float)
    rng = np.random.default_rng(0)
    whole = x[rng.integers(0, x.size, size=(N_BOOT, x.size))].mean(axis=1)
    expected = (float(np.quantile(whole, 0.025)), float(np.quantile(whole, 0.975)))
    del whole
    tracemalloc.start()
    try:
        got = mean_ci(list(x))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == expected
    assert peak < 40e6, f"{peak / 1e6:.0f} MB for 5,000 rows"  # drawn whole: 800 MB


def test_noninferiority_needs_evidence_not_just_no_evidence_of_a_loss() -> None:
    """--objective cost's "not worse": shown to lose less than the margin. On 60 val cases a candidate that
    loses 6 cases and wins 1 (mean -0.083) is not shown worse by a one-sided Wilcoxon test at 0.05, and must
    not pass; one that differs on a single case does."""
    from reflexopt.stats import noninferiority_p, worse_than_best

    lossy = [-1.0] * 6 + [1.0] + [0.0] * 53
    best = {i: 0.5 + 0.5 * (i % 2) for i in range(60)}
    mine = {i: best[i] + 0.5 * d for i, d in enumerate(lossy)}
    assert not worse_than_best(mine, best, p_threshold=0.05, min_cases=2)  # no evidence of a loss...
    assert noninferiority_p(lossy, 0.05) > 0.05  # ...is not evidence of none
    assert noninferiority_p([-1.0] + [0.0] * 59, 0.05) < 0.05
    assert noninferiority_p([0.0] * 60, 0.05) == 0.0 and noninferiority_p([-0.1] * 60, 0.05) == 1.0


def test_paired_gain_bar_is_twice_the_standard_error_of_the_differences() -> None:
    mine, best = {"a": 0.5, "b": 0.75, "c": 0.25, "x": 1.0}, {"a": 0.25, "b": 0.25, "c": 0.25, "y": 0.0}
    d = [0.25, 0.5, 0.0]  # only the shared cases count
    sd = (sum((v - sum(d) / 3) ** 2 for v in d) / 2) ** 0.5
    assert paired_gain_bar(mine, best) == pytest.approx(2 * sd / 3 ** 0.5)
    assert paired_gain_bar(mine, best, k=1) == pytest.approx(sd / 3 ** 0.5)
    assert paired_gain_bar({"a": 1.0}, {"a": 0.0}) == float("inf")  # one case says nothing about the spread
