"""Tests for lib.stats: the exact McNemar p-value and the paired bootstrap CI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lib.stats import bootstrap_difference_ci, mcnemar_exact_p, paired_comparison


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 10, 2 * 0.5**10),
        (10, 0, 2 * 0.5**10),
        (0, 0, 1.0),  # no discordant pairs: no evidence either way
        (5, 5, 1.0),  # a balanced split is the most likely outcome under the null
        (1, 1, 1.0),
        (0, 1, 1.0),
        (2, 8, 2 * (1 + 10 + 45) / 2**10),  # 2 * P(X <= 2), X ~ Binomial(10, 0.5)
    ],
)
def test_mcnemar_exact_p_known_values(b, c, p):
    assert mcnemar_exact_p(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_is_symmetric_and_shrinks_with_evidence():
    assert mcnemar_exact_p(3, 12) == mcnemar_exact_p(12, 3)
    assert mcnemar_exact_p(0, 20) < mcnemar_exact_p(0, 10) < mcnemar_exact_p(2, 10)


def test_mcnemar_large_counts_stay_finite():
    p = mcnemar_exact_p(400, 600)  # 2**1000 overflows a float; the integer arithmetic must not
    assert 0 < p < 1e-9 and math.isfinite(p)


def test_all_equal_pairs_give_zero_difference_ci_and_p_one():
    same = [True, False, True, True, False] * 4
    result = paired_comparison(same, same, seed=0)
    assert result["difference"] == 0.0
    assert (result["ci_low"], result["ci_high"]) == (0.0, 0.0)
    assert result["mcnemar_p"] == 1.0
    assert result["trained_only"] == result["baseline_only"] == 0


def test_counts_difference_and_ci_contains_the_estimate():
    baseline = [False] * 60 + [True] * 30 + [True] * 10
    trained = [True] * 60 + [True] * 30 + [False] * 10
    result = paired_comparison(baseline, trained, seed=1)
    assert result["n"] == 100
    assert result["trained_only"] == 60 and result["baseline_only"] == 10
    assert result["difference"] == pytest.approx(0.5)
    assert result["ci_low"] <= result["difference"] <= result["ci_high"]
    assert 0 < result["ci_low"]  # 60 wins against 10 losses: clearly better
    assert result["mcnemar_p"] < 1e-6


def test_ci_matches_resampling_item_indices():
    # The multinomial shortcut must give the same distribution as resampling item indices.
    rng = np.random.default_rng(7)
    baseline = rng.random(80) < 0.3
    trained = rng.random(80) < 0.5
    diffs = trained.astype(int) - baseline.astype(int)
    idx = np.random.default_rng(3).integers(0, 80, size=(20_000, 80))
    expected = np.quantile(diffs[idx].mean(axis=1), [0.025, 0.975])
    low, high = bootstrap_difference_ci(baseline, trained, seed=5, resamples=20_000)
    assert low == pytest.approx(expected[0], abs=0.02)
    assert high == pytest.approx(expected[1], abs=0.02)


def test_bootstrap_is_deterministic_given_the_seed():
    baseline = [i % 3 == 0 for i in range(50)]
    trained = [i % 2 == 0 for i in range(50)]
    first = paired_comparison(baseline, trained, seed=42)
    assert paired_comparison(baseline, trained, seed=42) == first
    assert bootstrap_difference_ci(baseline, trained, seed=43) != (first["ci_low"], first["ci_high"])


def test_empty_and_mismatched_inputs():
    empty = paired_comparison([], [], seed=0)
    assert empty["n"] == 0 and empty["difference"] == 0.0 and empty["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([True], [True, False], seed=0)
