"""Re-plan the sample after a pilot without losing the pilot: the conditional error principle.

A *planned* design is declared before any label: draw ``n_plan`` items uniformly without
replacement from the ``N`` and test every cut with the exact hypergeometric test of
:mod:`speculabel.certify.finite` at level ``delta`` (no earlier labels).  Its first ``n0`` draws
are the pilot.  For cut ``m`` (``n0_m`` pilot items inside, ``d0_m`` of them disagreeing), the
*conditional error* ``A_m`` is the probability, under the least favourable null ``D_m = B + 1``
and given the pilot, that the planned design would reject (Mueller and Schaefer 2004; exact
here, a sum over hypergeometric laws).  After the pilot any number ``n1`` of further labels may
be drawn (the number may depend on the pilot in any way); cut ``m`` is rejected when the
conditional p-value of the fresh draws, ``P(Hypergeom(m - n0_m, B + 1 - d0_m, n1_m) <= d1_m)``,
is at most ``A_m``.

Why it is valid: given the pilot, the fresh draws are a uniform sample of the rest, so the
rejection probability given the pilot is at most ``A_m`` (the p-value is computed at the fewest
disagreements the null allows, which only makes it larger); averaged over the pilot that is at
most the planned design's level ``delta`` (``A_m`` falls as the pilot shows more disagreements,
and a null with more disagreements shows more).  The nulls are nested over cuts as before, so
the fixed-sequence walk keeps the family-wise error at ``delta``.  Unlike a fresh test after a
pilot, every pilot label counts as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speculabel.certify.finite import allowed_misses, hypergeom_cdf


def lower_cdf(pop: int, bad: int, draws: np.ndarray, dmax: int) -> np.ndarray:
    """``P(Hypergeom(pop, bad, n) <= d)`` for every ``n`` in ``draws`` (rows) and
    ``d = 0..dmax`` (columns): log-space pmfs summed from the lower end (exact up to rounding,
    and far quicker than one tail sum per cell)."""
    from scipy.special import gammaln

    n = np.asarray(draws, dtype=np.float64)[:, None]
    d = np.arange(dmax + 1, dtype=np.float64)[None, :]

    def ln_choose(a: Any, b: Any) -> Any:
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    valid = (d <= min(bad, pop)) & (d <= n) & (n - d <= pop - bad)
    with np.errstate(invalid="ignore"):
        log_pmf = ln_choose(bad, d) + ln_choose(pop - bad, n - d) - ln_choose(pop, n)
    pmf = np.where(valid, np.exp(np.where(valid, log_pmf, 0.0)), 0.0)
    return np.minimum(np.cumsum(pmf, axis=1), 1.0)


def critical_values(pop: int, bad: int, sizes: np.ndarray, delta: float) -> np.ndarray:
    """For each sample size ``n``: the largest disagreement count the planned exact test
    rejects at (``P(Hypergeom(pop, bad, n) <= d) <= delta``), -1 when none."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if pop < bad or sizes.size == 0:
        return sizes.copy()  # the null is impossible: any count rejects
    cdf = lower_cdf(pop, bad, sizes, int(min(sizes.max(), bad)))
    return (cdf <= delta * (1 + 1e-9)).sum(axis=1) - 1


def conditional_levels(
    n_total: int,
    n_plan: int,
    pilot_pos: Sequence[int] | np.ndarray,
    pilot_miss: Sequence[bool] | np.ndarray,
    cuts: Sequence[int] | np.ndarray,
    target: float,
    delta: float,
) -> np.ndarray:
    """``A_m`` for every cut (see the module docstring); ``pilot`` = the first ``n0`` draws."""
    from scipy.stats import hypergeom

    pos = np.asarray(pilot_pos, dtype=np.int64)
    miss = np.asarray(pilot_miss, dtype=bool)
    n0 = len(pos)
    if n0 > n_plan:
        raise ValueError(f"the pilot ({n0}) is larger than the planned sample ({n_plan})")
    bad = allowed_misses(target, n_total) + 1
    rest_draws = n_plan - n0
    rest_items = n_total - n0
    out = np.zeros(len(cuts))
    for k, m in enumerate(cuts):
        inside = pos < m
        n0m, d0m = int(inside.sum()), int(miss[inside].sum())
        if m < bad:
            out[k] = 1.0  # nothing to reject: the cut is certified without labels
            continue
        left_bad = bad - d0m
        if left_bad <= 0:
            continue  # the pilot already shows the null holds: no design rejects
        if m - n0m < left_bad:
            out[k] = 1.0  # the pilot already rules the null out
            continue
        # draws of the rest of the planned sample that fall inside the cut (where likely)
        q = (m - n0m) / rest_items
        mid = rest_draws * q
        spread = 8.0 * np.sqrt(rest_draws * q * (1 - q)) + 2.0  # beyond: under 1e-12
        j = np.arange(max(0, int(mid - spread)), min(rest_draws, int(mid + spread)) + 1)
        p_j = hypergeom.pmf(j, rest_items, m - n0m, rest_draws)
        crit = critical_values(m, bad, n0m + j, delta) - d0m
        # under the least favourable null the rest of the cut holds ``left_bad`` misses
        if crit.max() < 0:
            continue
        cdf = lower_cdf(m - n0m, left_bad, np.minimum(j, m - n0m), int(crit.max()))
        rej = np.where(crit >= 0, cdf[np.arange(len(j)), np.maximum(crit, 0)], 0.0)
        total = float(np.nan_to_num(p_j * rej, nan=0.0).sum())  # nan never helps a cut
        out[k] = min(1.0, max(0.0, total))
    return out


def conditional_pass(
    levels: np.ndarray,
    pilot_pos: np.ndarray,
    pilot_miss: np.ndarray,
    fresh_pos: np.ndarray,
    fresh_miss: np.ndarray,
    cuts: np.ndarray,
    bad: int,
) -> int:
    """Fixed-sequence over ``cuts`` with the conditional test; index of the last passing cut
    before the first failure (-1: none)."""

    pp = np.sort(pilot_pos)
    pm = np.concatenate([[0], np.cumsum(pilot_miss[np.argsort(pilot_pos, kind="stable")])])
    fp_order = np.argsort(fresh_pos, kind="stable")
    fp = fresh_pos[fp_order]
    fm = np.concatenate([[0], np.cumsum(fresh_miss[fp_order])])
    n0m = np.searchsorted(pp, cuts, side="left")
    d0m = pm[n0m]
    n1m = np.searchsorted(fp, cuts, side="left")
    d1m = fm[n1m]
    pop = cuts - n0m
    left_bad = bad - d0m
    free = cuts < bad
    dead = left_bad <= 0
    safe_bad = np.clip(left_bad, 0, None)
    impossible = pop < safe_bad
    p = hypergeom_cdf(d1m, np.maximum(pop, safe_bad), safe_bad, np.minimum(n1m, np.maximum(pop, 0)))
    p = np.where(impossible, 0.0, p)
    ok = free | (~dead & (p <= levels))
    failed = np.flatnonzero(~ok)
    return int(failed[0] if failed.size else len(ok)) - 1


def plan_after_pilot(
    n_total: int,
    pilot_pos: np.ndarray,
    pilot_miss: np.ndarray,
    levels: np.ndarray,
    cuts: np.ndarray,
    bad: int,
    menu: Sequence[int],
    *,
    reps: int = 30,
    seed: int = 0,
) -> tuple[int, dict[int, float]]:
    """The number of fresh labels with the lowest mean simulated cost (share of ``N``), the
    fresh draws simulated from the pilot's logistic disagreement curve
    (:func:`speculabel.certify.budget.miss_curve`) at uniform positions among the rest."""
    from speculabel.certify.budget import miss_curve

    rng = np.random.default_rng(seed)
    theta, cov = miss_curve(pilot_pos / n_total, pilot_miss)
    rest = np.setdiff1d(np.arange(n_total), pilot_pos)
    sizes = [n for n in menu if n <= len(rest)]
    top = max(sizes)
    n0m = np.searchsorted(np.sort(pilot_pos), cuts, side="left")
    totals = np.zeros(len(sizes))
    for _ in range(reps):
        a, slope = rng.multivariate_normal(theta, cov)
        syn_pos = rng.permutation(rest)[:top]
        syn_miss = rng.random(top) < 1.0 / (1.0 + np.exp(-(a + slope * syn_pos / n_total)))
        for k, n in enumerate(sizes):
            i = conditional_pass(levels, pilot_pos, pilot_miss, syn_pos[:n], syn_miss[:n], cuts,
                                 bad)
            if i < 0:
                totals[k] += 1.0
            else:
                kept_labels = n0m[i] + int((syn_pos[:n] < cuts[i]).sum())
                totals[k] += (n_total - cuts[i] + kept_labels) / n_total
    means = totals / reps
    best = int(np.argmin(means))
    return sizes[best], {n: float(c) for n, c in zip(sizes, means, strict=True)}
