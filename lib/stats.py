"""Paired comparison of two models scored on the same items: difference, score CI, exact McNemar, verdict.

Why these methods. An eval set has ~100 items and a trained model often differs from its
baseline on only a handful of them. At such counts a percentile bootstrap CI is too narrow
(4 items right only after training, none only before, gave a CI above zero while the exact
test beside it said p = 0.125). Newcombe's hybrid score interval for paired proportions
(Newcombe 1998, Stat Med 17:2635-2650, method 10) keeps close to its nominal coverage at small
counts and is recommended for this design by Fagerland, Lydersen & Laake (2014, Stat Med
33:2850-2875). It is closed form: two Wilson score intervals, one per model, combined with the
correlation of the pairs. Tango's score interval performs as well but needs root finding, so
the closed form was chosen. The exact McNemar test is a two-sided binomial test on the
discordant pairs. scipy and statsmodels are not dependencies; each method is a few lines here,
tested against published values.

The verdict sentence is worded from BOTH the CI and the test, so it never claims more than either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import NamedTuple

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # the test's level matches the CI's, so the two can be read together
_Z = NormalDist().inv_cdf(1 - ALPHA / 2)  # 1.95996...
CI_METHOD = "newcombe-hybrid-score"


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (binomial, p = 0.5).

    Doubling the smaller tail is the usual exact form; with no discordant pairs there is no
    evidence either way, so p = 1.
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval for a single proportion; (0, 1) when there are no trials."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + _Z**2 / (2 * n)
    half_width = _Z * math.sqrt(p * (1 - p) / n + _Z**2 / (4 * n**2))
    scale = 1 + _Z**2 / n
    # Clamped because rounding can leave 0 successes a hair below 0 (or n a hair above 1).
    return max(0.0, (centre - half_width) / scale), min(1.0, (centre + half_width) / scale)


def newcombe_paired_ci(both: int, trained_only: int, baseline_only: int, neither: int) -> tuple[float, float]:
    """CI of p_trained - p_baseline from the paired 2x2 table (Newcombe 1998, method 10).

    The cells are Newcombe's e, f, g, h: items both models got right, only the trained one,
    only the baseline, neither. Each model's accuracy gets a Wilson interval; their distances
    from the estimates are combined as in the independent case, minus a covariance term with
    the phi correlation of the table. Phi is continuity corrected as published: a positive
    eh - fg is reduced by n/2 (not below 0), a negative one is used as it is; phi is 0 when a
    margin is empty (all items right, or all wrong, for one model), which avoids 0/0.
    """
    n = both + trained_only + baseline_only + neither
    if n == 0:
        return -1.0, 1.0  # no items: every difference is possible
    p_trained, p_baseline = (both + trained_only) / n, (both + baseline_only) / n
    low_t, high_t = wilson_interval(both + trained_only, n)
    low_b, high_b = wilson_interval(both + baseline_only, n)
    margins = (both + trained_only) * (baseline_only + neither) * (both + baseline_only) * (trained_only + neither)
    cross = both * neither - trained_only * baseline_only
    if cross > 0:
        cross = max(cross - n / 2, 0.0)
    phi = cross / math.sqrt(margins) if margins else 0.0
    below_t, above_t = p_trained - low_t, high_t - p_trained
    below_b, above_b = p_baseline - low_b, high_b - p_baseline
    # max(0, ...): the radicands are >= 0 in exact arithmetic (|phi| <= 1) but may round below it.
    delta = math.sqrt(max(0.0, below_t**2 - 2 * phi * below_t * above_b + above_b**2))
    epsilon = math.sqrt(max(0.0, above_t**2 - 2 * phi * above_t * below_b + below_b**2))
    difference = p_trained - p_baseline
    return max(-1.0, difference - delta), min(1.0, difference + epsilon)


def paired_comparison(baseline: Sequence[bool], trained: Sequence[bool]) -> dict:
    """How `trained` differs from `baseline`, both scored right/wrong on the same items in the same order.

    The difference is trained minus baseline accuracy, with Newcombe's paired score CI;
    `trained_only` counts the items only the trained model got right, `baseline_only` those only
    the baseline got right (the discordant pairs McNemar's test uses).
    """
    if len(baseline) != len(trained):
        raise ValueError(f"paired results must have the same length ({len(baseline)} != {len(trained)})")
    pairs = [(bool(b), bool(t)) for b, t in zip(baseline, trained)]
    n = len(pairs)
    both = pairs.count((True, True))
    trained_only = pairs.count((False, True))
    baseline_only = pairs.count((True, False))
    low, high = newcombe_paired_ci(both, trained_only, baseline_only, n - both - trained_only - baseline_only)
    return {
        "n": n,
        "difference": (trained_only - baseline_only) / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "confidence": CONFIDENCE,
        "ci_method": CI_METHOD,
        "trained_only": trained_only,
        "baseline_only": baseline_only,
        "mcnemar_p": mcnemar_exact_p(trained_only, baseline_only),
    }


def judge(comparison: dict) -> str:
    """The verdict as a word: "better", "worse", "inconclusive", "no_difference", "same_items" or "no_items".

    "better" and "worse" need BOTH the CI to exclude zero and McNemar p < ALPHA; when only one
    of them says so the evidence is "inconclusive"; when neither does there is "no_difference"
    shown. "same_items" means no item was right for only one model, so there is nothing to test.
    """
    c = comparison
    if c["n"] == 0:
        return "no_items"
    if c["trained_only"] == c["baseline_only"] == 0:
        return "same_items"
    ci_says = "better" if c["ci_low"] > 0 else "worse" if c["ci_high"] < 0 else None
    test_says = c["mcnemar_p"] < ALPHA
    if ci_says and test_says:
        return ci_says
    if ci_says or test_says:
        return "inconclusive"
    return "no_difference"


class Sides(NamedTuple):
    """Who is compared, for the verdict's wording: `new` is the side whose accuracy minus `old`'s is the difference."""

    new: str  # "the trained model"
    old: str  # "the baseline"
    new_only: str  # the items only `new` got right: "right only after training"
    old_only: str  # and only `old`: "only before"


# A run's comparison: the trained model against its own baseline (comparison["trained_only"] are new_only).
BEFORE_AND_AFTER = Sides("the trained model", "the baseline", "right only after training", "only before")


def word_verdict(comparison: dict, what: str, sides: Sides = BEFORE_AND_AFTER) -> str:
    """One sentence on `what` (e.g. "strict accuracy") that agrees with the CI and the test it sits beside."""
    c = comparison
    new, old = sides.new[0].upper() + sides.new[1:], sides.old
    kind = judge(c)
    if kind == "no_items":
        return f"No items were scored, so there is no verdict on {what}."
    ci = (f"the {c['confidence']:.0%} CI of the difference ({c['ci_low'] * 100:+.1f} to "
          f"{c['ci_high'] * 100:+.1f} points)")
    if kind == "same_items":
        return (f"{new} and {old} got the same items right, so there is no difference in "
                f"{what} to test; {ci} is the uncertainty left with {c['n']} items.")
    split = (f"{c['trained_only']} items {sides.new_only}, {c['baseline_only']} {sides.old_only} "
             f"(McNemar p = {c['mcnemar_p']:.3g})")
    if kind == "better":
        return f"{new} beats {old} on {what}: {split}, and {ci} excludes zero."
    if kind == "worse":
        return f"{new} is worse than {old} on {what}: {split}, and {ci} excludes zero."
    if kind == "inconclusive":
        disagreement = (f"{ci} excludes zero but p is not below {ALPHA:.2g}" if c["mcnemar_p"] >= ALPHA
                        else f"p is below {ALPHA:.2g} but {ci} includes zero")
        return f"The evidence on {what} is inconclusive: {split}; {disagreement}."
    return (f"The data do not show a difference in {what}: {split}, and {ci} includes zero; "
            f"too few items differ to tell the models apart.")
