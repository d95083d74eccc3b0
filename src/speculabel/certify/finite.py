"""Transductive whole-data-set certificate for a finite input: an exact hypergeometric test.

Setting.  The input is a fixed, finite set of ``N`` items, put in a fixed order by the workers'
confidence (:mod:`speculabel.certify.rank`; the order uses no labels).  A *cut* ``m`` keeps the
first ``m`` items for the workers; every other item goes to the judge.  Reference labels (the
judge's, or gold) are bought for a sample ``S`` drawn **uniformly at random without replacement**
from the items not labelled before it (the set ``E`` of earlier labels, e.g. a pilot, may be
empty).  Every labelled item takes the reference label in the output, so it agrees.

Quantity.  The output's whole-data agreement with the reference is
``(n_judge + agreeing kept) / N`` where ``n_judge`` counts every item the reference labels
(below the cut, or in ``E`` or ``S``).  Write ``K_m`` for the kept items outside ``E`` and
``D_m`` for the number of them whose workers' label disagrees.  The output disagrees on at most
``D_m`` items (fewer when ``S`` catches some), so ``D_m <= B = floor((1 - T) N)`` implies
agreement at least ``T``.  Conditionally on ``E``, ``D_m`` is a fixed number (no randomness but
the draw of ``S``), and the ``n_m`` sampled items that fall in ``K_m`` are a uniform sample of
``K_m``: their disagreements ``d_m`` follow ``Hypergeometric(|K_m|, D_m, n_m)`` exactly.

Test.  The null ``H_m: D_m > B`` is rejected when ``P(Hypergeom(|K_m|, B + 1, n_m) <= d_m) <=
delta`` (exact: the tail only grows with ``D_m``); a cut with ``|K_m| <= B`` needs no label at
all.  ``D_m`` never falls as ``m`` grows (nested kept sets), so the nulls are nested; testing
pre-declared cuts from strict to loose and keeping the last one before the first failure
(fixed-sequence) rejects a true null only if it rejects the first true one: probability at most
``delta``, no multiplicity correction.

Guarantee (the certificate's statement): with probability at least ``1 - delta`` over the
uniform draw of ``S`` from the input's unlabelled items, the whole-data agreement of the output
with the reference, over these ``N`` items, is at least ``T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def allowed_misses(target: float, n_total: int) -> int:
    """``B = floor((1 - T) N)``: kept items that may disagree while agreement stays >= T."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    return max(0, math.floor((1.0 - target) * n_total + 1e-9))


def hypergeom_cdf(d: np.ndarray, pop: np.ndarray, bad: np.ndarray | int,
                  n: np.ndarray) -> np.ndarray:
    """``P(Hypergeom(pop, bad, n) <= d)`` elementwise (1-D arrays): log-space pmfs summed
    from 0 (exact up to rounding; one vectorised pass instead of a tail sum per element)."""
    from scipy.special import gammaln

    d_ = np.atleast_1d(np.asarray(d, dtype=np.int64))
    pop_ = np.broadcast_to(np.asarray(pop, dtype=np.float64), d_.shape)[:, None]
    bad_ = np.broadcast_to(np.asarray(bad, dtype=np.float64), d_.shape)[:, None]
    n_ = np.broadcast_to(np.asarray(n, dtype=np.float64), d_.shape)[:, None]
    top = int(max(0, d_.max(initial=0)))
    k = np.arange(top + 1, dtype=np.float64)[None, :]
    valid = (k <= d_[:, None]) & (k <= bad_) & (k <= n_) & (n_ - k <= pop_ - bad_)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_pmf = (gammaln(bad_ + 1) - gammaln(k + 1) - gammaln(bad_ - k + 1)
                   + gammaln(pop_ - bad_ + 1) - gammaln(n_ - k + 1)
                   - gammaln(pop_ - bad_ - n_ + k + 1)
                   - gammaln(pop_ + 1) + gammaln(n_ + 1) + gammaln(pop_ - n_ + 1))
    pmf = np.where(valid, np.exp(np.where(valid, log_pmf, 0.0)), 0.0)
    return np.minimum(pmf.sum(axis=1), 1.0)


def hypergeom_p(d: np.ndarray | int, n: np.ndarray | int, pop: np.ndarray | int,
                bad: int) -> np.ndarray:
    """``P(Hypergeom(pop, bad, n) <= d)``: the p-value of "``bad`` or more of ``pop`` items
    disagree" after ``d`` disagreements among ``n`` drawn; 0 where ``pop <= bad - 1`` (the null
    is impossible), 1 where nothing was drawn and the null is possible."""
    d_, n_, pop_ = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=np.int64))
                                         for x in (d, n, pop)))
    impossible = pop_ < bad
    good = np.where(impossible, bad, pop_)  # any valid population where the null is impossible
    p = hypergeom_cdf(d_, good, bad, np.minimum(n_, good))
    out = np.where(impossible, 0.0, np.clip(p, 0.0, 1.0))
    return out if np.ndim(d) or np.ndim(n) or np.ndim(pop) else out.reshape(())


def hypergeom_upper(d: int, n: int, pop: int, delta: float) -> int:
    """Exact upper confidence bound at level ``1 - delta`` on the disagreeing items of a
    population of ``pop``, from ``d`` disagreements in a uniform sample of ``n`` of them
    without replacement: the largest ``D`` with ``P(Hypergeom(pop, D, n) <= d) > delta``."""
    if not 0 <= d <= n <= pop:
        raise ValueError(f"need 0 <= d <= n <= pop, got d={d}, n={n}, pop={pop}")
    lo, hi = d, pop - (n - d)  # D is at least d, and the n - d agreeing drawn are not in it
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if float(hypergeom_p(d, n, pop, mid)) > delta:
            lo = mid
        else:
            hi = mid - 1
    return lo


def last_passing(d_m: np.ndarray, n_m: np.ndarray, pop: np.ndarray, allowed: int,
                 delta: float) -> int:
    """Fixed-sequence over cuts (arrays strict to loose): index of the last cut before the
    first failure, -1 when the first fails."""
    ok = hypergeom_p(d_m, n_m, pop, allowed + 1) <= delta
    failed = np.flatnonzero(~ok)
    return int(failed[0] if failed.size else len(ok)) - 1


@dataclass
class CutCertificate:
    """The loosest certified cut and what it promises (see the module docstring)."""

    target: float
    delta: float
    n_total: int
    cut: int  # items kept for the workers (the first ``cut`` in the order); 0: none
    allowed: int  # B
    n_sampled: int  # |S|
    n_earlier: int  # |E|
    sampled_kept: int  # n_m at the cut
    misses_kept: int  # d_m at the cut
    upper: int | None  # exact upper bound on D_m at the cut (None: no cut certified)
    stopped_at: int | None  # the first cut whose test failed
    labelled_kept: int = 0  # items of E and S inside the kept part (the judge labels them)

    @property
    def judge_share(self) -> float:
        """Share of the N items the reference labels at this cut (sampled ones included)."""
        return 1.0 - (self.cut - self.labelled_kept) / self.n_total if self.n_total else 1.0

    def statement(self) -> str:
        return (f"whole-data agreement with the reference >= {self.target:g} over these "
                f"{self.n_total} items, with probability >= {1 - self.delta:g} over the uniform "
                f"draw without replacement of the {self.n_sampled} labelled items "
                f"(exact hypergeometric test, fixed-sequence over rank cuts)")

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "judge_share": self.judge_share, "statement": self.statement()}


def default_cuts(n_total: int, target: float, grid: int = 100) -> list[int]:
    """Pre-declared cuts (no labels used): the free cut ``B`` then ``grid`` even steps."""
    b = allowed_misses(target, n_total)
    cuts = {round(g * n_total / grid) for g in range(1, grid + 1)} | {b}
    return sorted(c for c in cuts if c > 0)


def certify_cut(
    n_total: int,
    sample_pos: Sequence[int] | np.ndarray,
    sample_miss: Sequence[bool] | np.ndarray,
    target: float,
    delta: float,
    *,
    earlier_pos: Sequence[int] | np.ndarray = (),
    cuts: Sequence[int] | None = None,
) -> CutCertificate:
    """The loosest cut of ``cuts`` (kept counts, strict to loose) certified by fixed-sequence.

    ``sample_pos[i]``: the position in the order (0 = most confident) of the ``i``-th item of
    ``S``; ``sample_miss[i]``: its workers' label disagrees with the reference.
    ``earlier_pos``: positions of items labelled before ``S`` was drawn (not part of the test's
    population; they count as agreeing).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    pos = np.asarray(sample_pos, dtype=np.int64)
    miss = np.asarray(sample_miss, dtype=bool)
    early = np.asarray(earlier_pos, dtype=np.int64)
    if pos.shape != miss.shape:
        raise ValueError(f"{len(pos)} sampled positions but {len(miss)} flags")
    for name, arr in (("sampled", pos), ("earlier", early)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_total):
            raise ValueError(f"{name} positions must lie in [0, {n_total})")
    if np.intersect1d(pos, early).size or len(np.unique(pos)) != len(pos):
        raise ValueError("a sample is drawn without replacement, apart from earlier labels")
    b = allowed_misses(target, n_total)
    cut_arr = np.array(sorted(set(cuts if cuts is not None else default_cuts(n_total, target))),
                       dtype=np.int64)
    cut_arr = cut_arr[(cut_arr > 0) & (cut_arr <= n_total)]
    order = np.argsort(pos, kind="stable")
    ps, miss_sorted = pos[order], miss[order]
    n_m = np.searchsorted(ps, cut_arr, side="left")  # sampled items with position < cut
    cum_miss = np.concatenate([[0], np.cumsum(miss_sorted)])
    d_m = cum_miss[n_m]
    e_m = np.searchsorted(np.sort(early), cut_arr, side="left")
    pop = cut_arr - e_m
    last = last_passing(d_m, n_m, pop, b, delta)
    stopped = int(cut_arr[last + 1]) if last + 1 < len(cut_arr) else None
    if last < 0:
        return CutCertificate(target, delta, n_total, 0, b, len(pos), len(early), 0, 0, None,
                              stopped, 0)
    i = int(last)
    upper = min(int(pop[i]), hypergeom_upper(int(d_m[i]), int(n_m[i]), int(pop[i]), delta))
    return CutCertificate(target, delta, n_total, int(cut_arr[i]), b, len(pos), len(early),
                          int(n_m[i]), int(d_m[i]), upper, stopped,
                          int(n_m[i] + e_m[i]))
