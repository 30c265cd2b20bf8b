"""Paired comparison of two models scored on the same items: difference, bootstrap CI, McNemar.

Both tests are hand-written because scipy is not a dependency and each is a few lines:
the exact McNemar test is a two-sided binomial test on the discordant pairs (math.comb),
and the paired bootstrap needs only numpy's seeded Generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 10_000
CONFIDENCE = 0.95


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


def bootstrap_difference_ci(
    baseline: Sequence[bool], trained: Sequence[bool], seed: int,
    resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile CI of mean(trained) - mean(baseline), resampling items (pairs kept together).

    Each item's paired difference is -1, 0 or +1, so a resample of n items is fully described by
    how many of each it drew: a multinomial draw, which is the same distribution as drawing n
    item indices with replacement, at O(resamples) memory instead of O(resamples * n).
    """
    diffs = np.asarray(trained, dtype=int) - np.asarray(baseline, dtype=int)
    n = len(diffs)
    if n == 0:
        return 0.0, 0.0
    probs = [np.mean(diffs == 1), np.mean(diffs == -1), np.mean(diffs == 0)]
    counts = np.random.default_rng(seed).multinomial(n, probs, size=resamples)
    means = (counts[:, 0] - counts[:, 1]) / n
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_comparison(baseline: Sequence[bool], trained: Sequence[bool], seed: int,
                      resamples: int = RESAMPLES) -> dict:
    """How `trained` differs from `baseline`, both scored right/wrong on the same items in the same order.

    The difference is trained minus baseline accuracy; `trained_only` counts the items only the
    trained model got right, `baseline_only` those only the baseline got right (the discordant
    pairs McNemar's test uses).
    """
    if len(baseline) != len(trained):
        raise ValueError(f"paired results must have the same length ({len(baseline)} != {len(trained)})")
    n = len(baseline)
    trained_only = sum(1 for b, t in zip(baseline, trained) if t and not b)
    baseline_only = sum(1 for b, t in zip(baseline, trained) if b and not t)
    low, high = bootstrap_difference_ci(baseline, trained, seed, resamples)
    return {
        "n": n,
        "difference": (sum(map(bool, trained)) - sum(map(bool, baseline))) / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "confidence": CONFIDENCE,
        "bootstrap_resamples": resamples,
        "bootstrap_seed": seed,
        "trained_only": trained_only,
        "baseline_only": baseline_only,
        "mcnemar_p": mcnemar_exact_p(trained_only, baseline_only),
    }
