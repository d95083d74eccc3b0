"""How many labels to buy: choose the test sample's size from a small pilot, before drawing it.

The cost of a certified cascade on ``N`` items is ``N - cut`` judge calls below the cut plus the
labelled items inside the kept part (a label below the cut is paid once, and only once).  Too
few labels certify only a strict cut; too many pay for kept items.  Nobody can choose the size
without labels, so a *pilot* (a uniform sample) is labelled first and used only to plan:
:func:`plan_sample_size` fits a logistic curve of "disagrees" against the rank on the pilot
(:func:`miss_curve`), draws curves from its Laplace posterior, simulates test samples of every
candidate size from them (uniform positions among the unlabelled items), runs the same exact
test on each (:mod:`speculabel.certify.finite`) and picks the size with the lowest mean cost.

The pilot plays no part in the test: conditionally on it, the test sample is a fresh uniform
draw from the items not yet labelled, so the choice of its size (a function of the pilot only)
cannot bias the test, and the test runs at the full ``delta``.  Pilot items take the judge's
label in the output (they agree), so they also shrink what the test must bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from speculabel.certify.finite import allowed_misses, last_passing


def size_menu(n_total: int, n_pilot: int, step: float = 1.2, first: int = 10,
              cap: float = 0.5) -> list[int]:
    """Candidate test sizes: 0, then a geometric ladder from ``first`` up to ``cap`` of the
    unlabelled items (fixed before any label is seen)."""
    top = max(0, int(cap * (n_total - n_pilot)))
    out, n = [0], float(first)
    while n <= top:
        if round(n) > out[-1]:
            out.append(round(n))
        n *= step
    return out


@dataclass
class SizePlan:
    """The chosen test size and the mean simulated cost (share of N) of every candidate."""

    size: int
    costs: dict[int, float] = field(default_factory=dict)


def simulated_cost(n_total: int, pilot_pos: np.ndarray, sample_pos: np.ndarray,
                   sample_miss: np.ndarray, cuts: np.ndarray, allowed: int,
                   delta: float) -> float:
    """Judge calls (share of N) of the cut the exact test certifies on this sample."""
    order = np.argsort(sample_pos, kind="stable")
    ps, pm = sample_pos[order], sample_miss[order]
    n_m = np.searchsorted(ps, cuts, side="left")
    d_m = np.concatenate([[0], np.cumsum(pm)])[n_m]
    e_m = np.searchsorted(pilot_pos, cuts, side="left")
    i = last_passing(d_m, n_m, cuts - e_m, allowed, delta)
    if i < 0:
        return 1.0
    return float(n_total - cuts[i] + e_m[i] + n_m[i]) / n_total


def miss_curve(frac: np.ndarray, miss: np.ndarray, prior: float = 1.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """A logistic curve of "disagrees" against the rank fraction (0 = most confident), fitted
    by Newton's method with a weak ridge prior (``prior``: its precision), and the Laplace
    covariance of its two parameters: a smooth, honest-about-noise model from a few labels."""
    x = np.column_stack([np.ones_like(frac), frac])
    y = miss.astype(float)
    theta = np.array([np.log((y.sum() + 0.5) / (len(y) - y.sum() + 0.5)), 0.0])
    hess = np.eye(2)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (y - p) - prior * theta * np.array([0.0, 1.0])
        w = p * (1.0 - p)
        hess = (x * w[:, None]).T @ x + prior * np.diag([1e-3, 1.0])
        step = np.linalg.solve(hess, grad)
        theta = theta + step
        if np.abs(step).max() < 1e-8:
            break
    return theta, np.linalg.inv(hess)


def plan_sample_size(
    n_total: int,
    pilot_pos: Sequence[int] | np.ndarray,
    pilot_miss: Sequence[bool] | np.ndarray,
    target: float,
    delta: float,
    cuts: Sequence[int],
    *,
    menu: Sequence[int] | None = None,
    reps: int = 30,
    seed: int = 0,
) -> SizePlan:
    """The test size with the lowest mean simulated cost (see the module docstring)."""
    pos = np.asarray(pilot_pos, dtype=np.int64)
    miss = np.asarray(pilot_miss, dtype=bool)
    if pos.size == 0:
        raise ValueError("planning needs a pilot of at least one labelled item")
    order = np.argsort(pos, kind="stable")
    pos, miss = pos[order], miss[order]
    cut_arr = np.array(sorted(set(cuts)), dtype=np.int64)
    b = allowed_misses(target, n_total)
    sizes = list(menu if menu is not None else size_menu(n_total, len(pos)))
    top = min(max(sizes), n_total - len(pos))
    rng = np.random.default_rng(seed)
    theta, cov = miss_curve(pos / n_total, miss)
    rest = np.setdiff1d(np.arange(n_total), pos)
    totals = np.zeros(len(sizes))
    for _ in range(reps):
        a, slope = rng.multivariate_normal(theta, cov)
        syn_pos = rng.permutation(rest)[:top]
        prob = 1.0 / (1.0 + np.exp(-(a + slope * syn_pos / n_total)))
        syn_miss = rng.random(top) < prob
        for k, n in enumerate(sizes):
            totals[k] += simulated_cost(n_total, pos, syn_pos[:n], syn_miss[:n], cut_arr, b,
                                        delta)
    means = totals / reps
    best = int(np.argmin(means))
    return SizePlan(sizes[best], {n: float(c) for n, c in zip(sizes, means, strict=True)})
