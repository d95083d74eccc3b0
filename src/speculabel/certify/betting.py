"""An anytime-valid test of a rank cut: betting against "too many kept items disagree".

For one cut, the kept population (``pop`` items outside earlier labels) holds ``D`` disagreeing
items; labels arrive as a uniform draw without replacement.  Under the null ``D >= bad`` the
conditional mean of the next draw is at least ``mu_i = (bad - s_{i-1}) / (pop - i + 1)``
(``s_{i-1}``: disagreements seen so far), so the capital
``prod_i (1 + lambda_i (mu_i - x_i))`` with ``0 <= lambda_i <= 1 / (1 - mu_i)`` is a nonnegative
supermartingale (Waudby-Smith and Ramdas, "Estimating means of bounded random variables by
betting", 2023, the without-replacement case); an average of such capitals over a fixed grid of
bet sizes is one too.  By Ville's inequality it ever reaches ``1 / delta`` with probability at
most ``delta`` under the null, **whenever one looks and however one decides to stop**.

With nested nulls over cuts (``D_m`` grows with the cut), rejecting cuts strict to loose and
keeping the last one before the first cut not yet rejected (fixed sequence) rejects a true null
only if the first true null's capital crosses ``1 / delta``: probability at most ``delta`` for
the whole run, any data-dependent stopping time included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BET_FRACTIONS = np.linspace(0.05, 0.95, 19)


def log_capital(miss: np.ndarray, pop: int, bad: int,
                fractions: np.ndarray = BET_FRACTIONS) -> float:
    """Log of the running maximum of the mixed capital against ``D >= bad`` after the draws
    ``miss`` (in order) from a population of ``pop``; ``inf`` once the null is impossible."""
    if pop < bad:
        return float("inf")
    log_k = np.zeros(len(fractions))
    best = -np.inf
    seen = 0
    for i, x in enumerate(miss):
        left = pop - i
        need = bad - seen  # disagreeing items the null still puts among the ``left``
        if need <= 0:
            return best if np.isfinite(best) else 0.0  # the null is certainly true now
        mu = need / left
        if mu >= 1.0:
            if not x:
                return float("inf")  # every remaining item had to disagree
        else:
            lam = fractions / (1.0 - mu)
            log_k += np.log1p(lam * (mu - float(x)))
        seen += int(x)
        m = float(np.log(np.mean(np.exp(log_k - log_k.max()))) + log_k.max())
        best = max(best, m)
    return best if np.isfinite(best) else 0.0


def betting_cut(
    sample_pos: Sequence[int] | np.ndarray,
    sample_miss: Sequence[bool] | np.ndarray,
    cuts: Sequence[int],
    bad: int,
    delta: float,
) -> int:
    """Index into ``cuts`` (strict to loose) of the loosest cut rejected so far, or -1.

    ``sample_pos`` / ``sample_miss``: every label drawn so far, in draw order (positions in the
    rank order).  A cut's capital uses the draws that fall inside it, in order.
    """
    pos = np.asarray(sample_pos, dtype=np.int64)
    miss = np.asarray(sample_miss, dtype=bool)
    thresh = np.log(1.0 / delta)
    last = -1
    for j, m in enumerate(cuts):
        inside = miss[pos < m]
        if log_capital(inside, int(m), bad) < thresh:
            break
        last = j
    return last
