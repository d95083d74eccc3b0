"""Exact binomial tools for the guarantee: p-values and one-sided Clopper-Pearson bounds.

Both are cached: a threshold sweep (and a split check of it) asks for the same ``(k, n)`` again
and again.
"""

from __future__ import annotations

import functools
import math


@functools.lru_cache(maxsize=1 << 16)
def p_value(k: int, n: int, eps: float) -> float:
    """p-value of "the rate exceeds ``eps``" after ``k`` events in ``n`` items.

    ``P(Binomial(n, eps) <= k)``: small when ``k`` is far below ``n * eps``.  With ``n = 0`` it
    is 1 (no evidence).
    """
    from scipy.stats import binom

    if n <= 0:
        return 1.0
    return float(min(1.0, binom.cdf(k, n, eps)))


@functools.lru_cache(maxsize=1 << 16)
def upper_bound(k: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound on a rate at confidence ``1 - delta``.

    The largest ``p`` with ``P(Binomial(n, p) <= k) >= delta``: the ``1 - delta`` quantile of
    ``Beta(k + 1, n - k)``.
    """
    from scipy.stats import beta

    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if k < 0:
        raise ValueError("k must be >= 0")
    if n <= 0 or k >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, k + 1, n - k))


def min_items(target: float, delta: float) -> int:
    """Fewest accepted items on which a test at ``target`` can pass at all (zero misses)."""
    eps = 1.0 - target
    if eps <= 0.0:
        return 10**12  # a target of 1.0 can never be certified from a finite sample
    if eps >= 1.0:
        return 0
    return max(1, math.ceil(math.log(delta) / math.log1p(-eps) - 1e-12))
