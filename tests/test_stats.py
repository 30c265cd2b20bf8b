"""Tests for lib.stats: Wilson and Newcombe intervals against published values, McNemar, the verdict."""

from __future__ import annotations

import math

import pytest

from lib.stats import (
    ALPHA,
    Sides,
    judge,
    mcnemar_exact_p,
    newcombe_paired_ci,
    paired_comparison,
    wilson_interval,
    word_verdict,
)


def _pairs(both: int, trained_only: int, baseline_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    """(baseline, trained) right/wrong lists holding the given paired 2x2 table."""
    cells = [(True, True)] * both + [(False, True)] * trained_only + [(True, False)] * baseline_only
    cells += [(False, False)] * neither
    return [b for b, _ in cells], [t for _, t in cells]


# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 10, 2 * 0.5**10),
        (10, 0, 2 * 0.5**10),
        (0, 0, 1.0),  # no discordant pairs: no evidence either way
        (5, 5, 1.0),  # a balanced split is the most likely outcome under the null
        (1, 1, 1.0),
        (0, 1, 1.0),
        (4, 0, 0.125),  # the case: 2 * 0.5**4
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


# --------------------------------------------------------------------------- published values

# Newcombe RG (1998), "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Stat Med 17:857-872, Table I, method 3 (Wilson score, no continuity correction).
@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombe_1998_table_1(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-5)


# The paired 2x2 table of Cavo et al. (2012), complete response before/after consolidation
# therapy: 59 both, 6 before only, 16 after only, 80 neither (n = 161). It is the worked example of
# Fagerland, Lydersen & Laake (2014), "Recommended tests and confidence intervals for paired
# binomial proportions", Stat Med 33:2850-2875, and of their book (Statistical Analysis of
# Contingency Tables, 2017, ch. 8). Their R package contingencytables checks the Newcombe
# square-and-add (method 10) interval in tests/testthat/test-ch8.R:
#   "estimate = -0.0621 (95% CI -0.1186 to -0.0046)"
# and, for the table [[1, 0], [0, 1]]: "0.0000 (95% CI -0.5734 to 0.5734)".
@pytest.mark.parametrize(
    ("table", "difference", "low", "high"),
    [
        pytest.param((59, 6, 16, 80), -0.0621, -0.1186, -0.0046, id="Cavo 2012 (FLL 2014)"),
        pytest.param((1, 0, 0, 1), 0.0, -0.5734, 0.5734, id="one right by both, one wrong by both"),
    ],
)
def test_newcombe_paired_ci_matches_published_values(table, difference, low, high):
    both, first_only, second_only, neither = table
    assert newcombe_paired_ci(both, first_only, second_only, neither) == pytest.approx((low, high), abs=5e-5)
    baseline, trained = _pairs(*table)
    result = paired_comparison(baseline, trained)
    assert result["difference"] == pytest.approx(difference, abs=5e-5)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high), abs=5e-5)


def test_phi_correction_changes_the_interval_when_pairs_agree():
    # Against the independent-samples interval (phi = 0), positively correlated pairs must
    # give a narrower interval: this fails if the correlation term is dropped or mis-signed.
    both, trained_only, baseline_only, neither = 40, 12, 2, 46
    n = both + trained_only + baseline_only + neither
    low, high = newcombe_paired_ci(both, trained_only, baseline_only, neither)
    p_t, p_b = (both + trained_only) / n, (both + baseline_only) / n
    (lt, ut), (lb, ub) = wilson_interval(both + trained_only, n), wilson_interval(both + baseline_only, n)
    unpaired = (p_t - p_b - math.hypot(p_t - lt, ub - p_b), p_t - p_b + math.hypot(ut - p_t, p_b - lb))
    assert unpaired[0] < low < 0.1 < high < unpaired[1]


def test_interval_is_antisymmetric_in_the_two_models():
    low, high = newcombe_paired_ci(20, 7, 2, 71)
    assert newcombe_paired_ci(20, 2, 7, 71) == pytest.approx((-high, -low), abs=1e-12)


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    ("table", "difference"),
    [
        pytest.param((0, 0, 0, 100), 0.0, id="all wrong for both"),
        pytest.param((100, 0, 0, 0), 0.0, id="all right for both"),
        pytest.param((0, 100, 0, 0), 1.0, id="trained all right, baseline all wrong"),
        pytest.param((0, 0, 100, 0), -1.0, id="baseline all right, trained all wrong"),
        pytest.param((37, 0, 0, 63), 0.0, id="no discordant pairs"),
        pytest.param((0, 3, 0, 0), 1.0, id="three items"),
    ],
)
def test_degenerate_tables_give_finite_intervals_around_the_estimate(table, difference):
    baseline, trained = _pairs(*table)
    result = paired_comparison(baseline, trained)
    assert result["difference"] == difference
    assert -1.0 <= result["ci_low"] <= difference <= result["ci_high"] <= 1.0
    assert result["ci_low"] < result["ci_high"]  # never a zero-width interval (the Wald interval's flaw)


def test_no_discordant_pairs_gives_a_symmetric_interval_and_p_one():
    baseline, trained = _pairs(30, 0, 0, 70)
    result = paired_comparison(baseline, trained)
    assert result["ci_low"] == pytest.approx(-result["ci_high"]) and result["ci_high"] > 0
    assert result["mcnemar_p"] == 1.0 and judge(result) == "same_items"


def test_empty_and_mismatched_inputs():
    empty = paired_comparison([], [])
    assert empty == {
        "n": 0, "difference": 0.0, "ci_low": -1.0, "ci_high": 1.0, "confidence": 0.95,
        "ci_method": "newcombe-hybrid-score", "trained_only": 0, "baseline_only": 0, "mcnemar_p": 1.0,
    }
    assert judge(empty) == "no_items" and "No items were scored" in word_verdict(empty, "accuracy")
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([True], [True, False])


def test_counts_and_keys():
    baseline, trained = _pairs(30, 60, 10, 0)
    result = paired_comparison(baseline, trained)
    assert result["n"] == 100 and result["trained_only"] == 60 and result["baseline_only"] == 10
    assert result["difference"] == pytest.approx(0.5)
    assert result["ci_method"] == "newcombe-hybrid-score" and result["confidence"] == 0.95


# --------------------------------------------------------------------------- the verdict


def test_four_right_against_none_is_not_called_a_win():
    # The issue: n = 100, 4 items right only after training, none only before. The bootstrap
    # called this a win; McNemar p = 0.125. Neither the CI nor the verdict may claim one.
    baseline, trained = _pairs(0, 4, 0, 96)
    result = paired_comparison(baseline, trained)
    assert result["mcnemar_p"] == 0.125
    assert result["ci_low"] < 0 < result["ci_high"]
    assert judge(result) == "no_difference"
    sentence = word_verdict(result, "strict accuracy")
    assert "beats" not in sentence and "do not show a difference" in sentence
    assert "(-0.4 to +9.8 points) includes zero" in sentence and "p = 0.125" in sentence


def test_five_against_none_is_inconclusive_not_a_win():
    # Here the CI (+0.3 to +11.2 points) excludes zero but p = 0.0625: the two disagree.
    baseline, trained = _pairs(0, 5, 0, 95)
    result = paired_comparison(baseline, trained)
    assert result["ci_low"] > 0 and result["mcnemar_p"] == 0.0625
    assert judge(result) == "inconclusive"
    assert word_verdict(result, "strict accuracy") == (
        "The evidence on strict accuracy is inconclusive: 5 items right only after training, 0 only before "
        "(McNemar p = 0.0625); the 95% CI of the difference (+0.3 to +11.2 points) excludes zero but p is "
        "not below 0.05."
    )


def test_clear_win_and_clear_loss():
    baseline, trained = _pairs(30, 60, 10, 0)
    win = paired_comparison(baseline, trained)
    assert judge(win) == "better"
    assert word_verdict(win, "strict accuracy").startswith("The trained model beats the baseline on strict accuracy")
    loss = paired_comparison(trained, baseline)  # the same items, the models swapped
    assert judge(loss) == "worse"
    assert word_verdict(loss, "format rate").startswith("The trained model is worse than the baseline on format rate")


def test_same_items_right_is_worded_as_no_difference_to_test():
    baseline, trained = _pairs(12, 0, 0, 88)
    sentence = word_verdict(paired_comparison(baseline, trained), "strict accuracy")
    assert sentence.startswith("The trained model and the baseline got the same items right")
    assert "beats" not in sentence and "worse" not in sentence


def test_the_verdict_names_the_sides_it_is_given():
    # lib.compare pairs two runs' trained models: the same sentence, with the runs named in place of before/after.
    runs = Sides("run B's trained model", "run A's", "right only in run B", "only in run A")
    baseline, trained = _pairs(30, 60, 10, 0)
    win = paired_comparison(baseline, trained)
    assert word_verdict(win, "strict accuracy", runs).startswith(
        "Run B's trained model beats run A's on strict accuracy: 60 items right only in run B, 10 only in run A")
    assert word_verdict(paired_comparison(trained, baseline), "strict accuracy", runs).startswith(
        "Run B's trained model is worse than run A's")
    same = word_verdict(paired_comparison(*_pairs(12, 0, 0, 88)), "strict accuracy", runs)
    assert same.startswith("Run B's trained model and run A's got the same items right")
    for sentence in (word_verdict(win, "strict accuracy", runs), same):
        assert "training" not in sentence and "baseline" not in sentence


@pytest.mark.parametrize("n", [10, 40, 100])
def test_verdict_never_contradicts_the_ci_or_the_test(n):
    # Every table with n items (both-right count 0 or n // 3): a win or a loss is claimed only
    # when the CI excludes zero on that side AND McNemar p < ALPHA; a disagreement is inconclusive.
    kinds = set()
    for both in (0, n // 3):
        for trained_only in range(n - both + 1):
            for baseline_only in range(n - both - trained_only + 1):
                neither = n - both - trained_only - baseline_only
                result = paired_comparison(*_pairs(both, trained_only, baseline_only, neither))
                kind = judge(result)
                kinds.add(kind)
                significant = result["mcnemar_p"] < ALPHA
                assert (kind == "better") == (result["ci_low"] > 0 and significant)
                assert (kind == "worse") == (result["ci_high"] < 0 and significant)
                excludes = result["ci_low"] > 0 or result["ci_high"] < 0
                assert (kind == "inconclusive") == (excludes != significant)
    assert {"better", "worse", "no_difference", "same_items"} <= kinds
