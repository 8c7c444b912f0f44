from __future__ import annotations

import math

import pytest
from scipy import stats as st

from reflexopt.stats import mean_ci, paired_compare, percentile


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
