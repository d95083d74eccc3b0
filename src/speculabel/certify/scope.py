"""What a certificate is about: three scopes, each with an exact test at a given level.

For a rule threshold ``t`` the workers decide the items whose score is at least ``t``
(``A_t``); ``N`` is the number of calibration items.

``workers``
    Agreement with the reference on the items the workers decide is at least ``target``.
    Test: ``k`` = disagreements in ``A_t`` among ``n = |A_t|``; null "disagreement rate on
    worker-decided items > 1 - target"; exact p-value ``P(Binomial(n, 1 - target) <= k)``.
    Strict: the workers' share alone must reach the target.
``dataset``
    Agreement with the reference over *all* items is at least ``target``, where the items the
    judge decides count as agreeing (the judge is the reference): the per-item loss is
    "decided by the workers and disagrees", so ``k`` = disagreements in ``A_t`` among all
    ``n = N`` items; same exact binomial test.  The loss can only grow as ``t`` loosens (more
    items accepted), and the test is exact for every ``t``, so fixed-sequence testing from strict
    to loose applies directly.  With the workers deciding a share ``c``, a target ``T`` needs
    only ``1 - (1 - T) / c`` agreement on their share (``T = 0.9``, ``c = 0.5``: 0.80).
``non-inferior``
    The cascade's accuracy on gold is at most ``margin`` below the judge's.  Per item the loss
    is ``accepted x (worker wrong - judge wrong)`` in {-1, 0, 1}: ``b`` items of ``A_t`` where
    the workers are wrong and the judge right, ``c`` where the workers are right and the judge
    wrong; the quantity is ``(b - c) / N`` (judge accuracy minus cascade accuracy).  Its upper
    bound at level ``alpha`` is the Clopper-Pearson upper bound of ``b / N`` at ``alpha / 2``
    minus the Clopper-Pearson lower bound of ``c / N`` at ``alpha / 2``: exact for each
    binomial, and valid for the difference by the union bound (the two rates come from the same
    items, so no independence is needed).  The test passes when that bound is at most
    ``margin``.  The loss need not be monotone in ``t``; fixed-sequence testing controls the
    family-wise error for any order fixed in advance, so the guarantee holds all the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from speculabel.certify.binomial import min_items, p_value, upper_bound

Scope = Literal["workers", "dataset", "non-inferior"]
SCOPES: tuple[Scope, ...] = ("workers", "dataset", "non-inferior")


def lower_bound(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound on a rate at confidence ``1 - alpha``."""
    return 0.0 if n <= 0 else 1.0 - upper_bound(n - k, n, alpha)


@dataclass(frozen=True)
class Counts:
    """At one threshold: ``n`` items accepted by the rule; ``k`` of them disagree with the
    reference; ``b`` / ``c``: accepted with the workers wrong and the judge right / the
    workers right and the judge wrong (non-inferiority only)."""

    n: int
    k: int
    b: int = 0
    c: int = 0


class Tally:
    """The items sorted by score once, so each threshold's counts are a look-up."""

    def __init__(self, scope: Scope, scores: np.ndarray, agree: np.ndarray,
                 judge_right: np.ndarray | None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
        if scope == "non-inferior" and judge_right is None:
            raise ValueError("the non-inferiority scope needs the judge's correctness on gold")
        self.scope = scope
        self.n_total = len(scores)
        order = np.argsort(-scores, kind="stable")
        self._neg = -scores[order]  # ascending
        a = agree[order]
        self._wrong = np.concatenate([[0], np.cumsum(~a)])
        if judge_right is not None:
            j = judge_right[order]
            self._b = np.concatenate([[0], np.cumsum(~a & j)])
            self._c = np.concatenate([[0], np.cumsum(a & ~j)])

    def at(self, t: float) -> Counts:
        n = int(np.searchsorted(self._neg, -t, side="right"))  # items with score >= t
        if self.scope == "non-inferior":
            return Counts(n, int(self._wrong[n]), int(self._b[n]), int(self._c[n]))
        return Counts(n, int(self._wrong[n]))

    # ................................................................ the test and its bound
    def statistic(self, c: Counts, target: float, level: float) -> float:
        """The p-value (workers, dataset) or the upper bound of the accuracy loss
        (non-inferior) at ``level``."""
        if self.scope == "workers":
            return p_value(c.k, c.n, 1.0 - target)
        if self.scope == "dataset":
            return p_value(c.k, self.n_total, 1.0 - target)
        return self.loss_bound(c, level)

    def passes(self, c: Counts, target: float, level: float) -> bool:
        if level <= 0:
            return False
        stat = self.statistic(c, target, level)
        return stat <= (target if self.scope == "non-inferior" else level)

    def loss_bound(self, c: Counts, level: float) -> float:
        n = self.n_total
        return upper_bound(c.b, n, level / 2) - lower_bound(c.c, n, level / 2)

    def bound(self, c: Counts, level: float) -> float:
        """The certified side of the quantity at ``level``: a lower bound on agreement
        (workers, dataset), an upper bound on the accuracy loss (non-inferior)."""
        if self.scope == "workers":
            return 1.0 - upper_bound(c.k, c.n, level) if c.n else 0.0
        if self.scope == "dataset":
            return 1.0 - upper_bound(c.k, self.n_total, level)
        return self.loss_bound(c, level)

    def estimate(self, c: Counts) -> float | None:
        """The point estimate of the certified quantity."""
        if self.scope == "workers":
            return 1.0 - c.k / c.n if c.n else None
        if self.scope == "dataset":
            return 1.0 - c.k / self.n_total if self.n_total else None
        return (c.b - c.c) / self.n_total if self.n_total else None

    def better(self, x: float, y: float) -> bool:
        """Is bound ``x`` better than bound ``y``?"""
        return x < y - 1e-12 if self.scope == "non-inferior" else x > y + 1e-12

    def starts(self, target: float, level: float, how_many: int) -> list[int]:
        """Accepted counts at which a fresh share of delta joins the sequence (they depend on
        the scores only, never on the labels).  Workers: the first threshold where a test can
        pass at all (``n_min`` accepted items), then 4x and 16x that; the other scopes count
        every item, so their first test can pass at the strictest threshold."""
        if self.scope == "workers":
            n0 = min_items(target, level)
            return [n0 * 4**i for i in range(how_many)]
        return [round(self.n_total * i / (2 * how_many)) for i in range(how_many)]


def needed_items(scope: Scope, target: float, delta: float) -> int:
    """The fewest items on which anything can be certified at all (no miss anywhere)."""
    if scope == "non-inferior":
        if target <= 0:
            return 10**12
        return max(1, math.ceil(math.log(delta / 2) / math.log1p(-target) - 1e-12))
    return min_items(target, delta)
