"""The loosest threshold of a rule that a calibration set certifies (Criterion 2, made safe).

On a calibration set where every item has a *reference* label (the judge's, or gold), each item
has a *score* (the rule's support for the workers' label; accepted at threshold ``t`` when the
score is at least ``t``) and an *agree* flag.  :func:`calibrate_threshold` picks the loosest
threshold ``t`` of a fixed grid such that

    P( agreement with the reference on the items the workers decide at t  >=  target )
        >=  1 - delta

over the draw of the calibration set, for new items drawn from the same distribution.

Method: **exact binomial test with fixed-sequence testing** (as in Trust or Escalate, Jung et
al. 2024, and Learn-then-Test, Angelopoulos et al. 2021).  Thresholds are walked from strict
(1.0) to loose (0.0); at each, the null hypothesis "the disagreement rate exceeds ``eps = 1 - target``"
has the exact p-value ``P(Binomial(n, eps) <= k)`` for ``k`` disagreements among the ``n``
accepted items; the test passes when it is at most the level (equivalently: the one-sided
Clopper-Pearson upper bound on the disagreement rate is below ``eps``).  Testing in a fixed
order and stopping at the first failure controls the family-wise error at ``delta`` without any
multiplicity correction, so each test runs at the full ``delta``; the chosen threshold is the
last one that passed, the loosest (fewest judge calls) certified one.

One practical detail, stated openly: at the strict end of the grid almost no item is accepted,
and no test on fewer than ``n_min = ceil(log(delta) / log(1 - eps))`` items can pass even with no
disagreement at all (45 items for target 0.95 at delta 0.1).  The sequence starts at the first threshold
with at least ``n_min`` accepted items; that start depends on the scores only, never on the
labels; it is exact when agreement does not fall as confidence rises (the usual case, and what
a confidence score is for), and the bench measures the violation rate over random splits.
``method="fallback"`` splits delta in three and restarts a fresh sequence at ``n_min``,
``4 n_min`` and ``16 n_min`` accepted items (a fallback procedure: the family-wise error stays at
delta, and one confidently wrong answer early no longer ends the search).  ``method="bonferroni"``
tests every grid threshold at ``delta / len(grid)`` and needs no order at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from speculabel.certify.binomial import min_items, p_value, upper_bound

METHODS = ("fixed-sequence", "fallback", "bonferroni")
FALLBACK_STARTS = 3


def default_grid(step: float = 0.005) -> list[float]:
    """Thresholds from 1.0 down to 0.0 (strict to loose), fixed before seeing any data."""
    n = round(1.0 / step)
    return [round(1.0 - i * step, 6) for i in range(n + 1)]


# ----------------------------------------------------------------------------- threshold search


@dataclass(frozen=True)
class SequenceStep:
    """One threshold of the sequence: ``n`` accepted items, ``k`` of them disagreeing."""

    threshold: float
    n: int
    k: int
    p_value: float
    passed: bool

    @property
    def agreement(self) -> float | None:
        return 1.0 - self.k / self.n if self.n else None


@dataclass
class CalibrationResult:
    """The chosen threshold and what it promises.

    ``coverage``: share of calibration items the workers decide at ``threshold`` (1 minus the
    judge-call rate).  ``agreement``: their empirical agreement with the reference.  ``bound``:
    the lower confidence bound on that agreement (``1 -`` Clopper-Pearson upper bound on
    disagreement at level ``1 - delta``).  When no threshold qualifies, ``feasible`` is False,
    ``threshold`` is None (the workers must decide nothing) and ``shortfall`` says how far the
    best agreement any grid threshold can certify is below the target.
    """

    target: float
    delta: float
    method: str
    n_items: int
    threshold: float | None
    coverage: float
    agreement: float | None
    bound: float | None
    feasible: bool
    shortfall: float
    best_bound: float  # the highest agreement lower bound over the grid
    best_bound_threshold: float | None
    n_min: int
    steps: list[SequenceStep] = field(default_factory=list, repr=False)
    stopped_at: float | None = None  # fixed-sequence: the first threshold whose test failed

    @property
    def judge_call_rate(self) -> float:
        return 1.0 - self.coverage

    def message(self) -> str:
        if self.feasible:
            return (
                f"threshold {self.threshold:g}: the workers decide {100 * self.coverage:.1f}% of "
                f"items (judge-call rate {100 * self.judge_call_rate:.1f}%); agreement on those "
                f"{100 * (self.agreement or 0):.1f}% on {self.n_items} calibration items, "
                f"at least {100 * (self.bound or 0):.1f}% with probability "
                f"{100 * (1 - self.delta):g}% (target {100 * self.target:g}%)"
            )
        where = (
            f" (threshold {self.best_bound_threshold:g})"
            if self.best_bound_threshold is not None
            else ""
        )
        if self.best_bound >= self.target:
            stop = f" at threshold {self.stopped_at:g}" if self.stopped_at is not None else ""
            return (
                f"no threshold meets the target: threshold {self.best_bound_threshold:g} alone "
                f"would show agreement >= {100 * self.best_bound:.1f}%, but the {self.method} "
                f"test sequence (strict to loose) failed earlier{stop}, on too few or too noisy "
                f"items, and may not go past a failure; more calibration items, or "
                f"--method fallback (fresh starts further on), can reach it"
            )
        return (
            f"no threshold meets the target: agreement {100 * self.target:g}% with probability "
            f"{100 * (1 - self.delta):g}% cannot be certified on these {self.n_items} items; the "
            f"best certifiable agreement is {100 * self.best_bound:.1f}%{where}, short by "
            f"{100 * self.shortfall:.1f} points"
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [asdict(s) for s in self.steps if s.n > 0]
        d["judge_call_rate"] = self.judge_call_rate
        return d


def calibrate_threshold(
    scores: Sequence[float] | np.ndarray,
    agree: Sequence[bool] | np.ndarray,
    target: float,
    delta: float,
    *,
    grid: Sequence[float] | None = None,
    method: str = "fixed-sequence",
) -> CalibrationResult:
    """The loosest grid threshold certified to give ``agreement >= target`` w.p. ``1 - delta``.

    ``scores[i]``: the rule's support for item ``i`` (accepted at threshold ``t`` iff
    ``scores[i] >= t``); ``-inf`` or NaN for an item the rule never accepts (no majority, too
    few answers).  ``agree[i]``: whether the workers' label equals the reference.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    s = np.asarray(scores, dtype=float)
    a = np.asarray(agree, dtype=bool)
    if s.shape != a.shape:
        raise ValueError(f"{len(s)} scores but {len(a)} agreement flags")
    s = np.where(np.isnan(s), -np.inf, s)
    thresholds = sorted({float(t) for t in (grid if grid is not None else default_grid())},
                        reverse=True)
    n_total = len(s)
    eps = 1.0 - target

    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    wrong_cum = np.concatenate([[0], np.cumsum(~a[order])])
    neg = -s_sorted  # ascending
    steps: list[SequenceStep] = []
    if method == "fixed-sequence":
        level = delta
    elif method == "fallback":
        level = delta / FALLBACK_STARTS
    else:
        level = delta / max(1, len(thresholds))
    n_start = min_items(target, level)
    # fallback: a fresh share of delta joins at n_start, 4 n_start, 16 n_start accepted items
    starts = [n_start * 4**i for i in range(FALLBACK_STARTS)]
    chosen: SequenceStep | None = None
    chosen_level = level
    carried = 0.0  # fixed-sequence / fallback: the level passed on by a rejection
    started = 0
    stopped = False
    stopped_at: float | None = None
    best_bound, best_t = 0.0, None
    for t in thresholds:
        n = int(np.searchsorted(neg, -t, side="right"))  # items with score >= t
        k = int(wrong_cum[n])
        p = p_value(k, n, eps)
        if method == "bonferroni":
            ok = p <= level
            if ok and (chosen is None or n >= chosen.n):
                chosen = SequenceStep(t, n, k, p, True)
        else:
            # the sequence starts at the first threshold where a test can pass at all
            fresh = 0.0
            while started < (1 if method == "fixed-sequence" else FALLBACK_STARTS) and \
                    n >= starts[started]:
                fresh += level
                started += 1
            here = carried + fresh
            ok = here > 0 and not stopped and p <= here
            if ok:
                chosen, chosen_level = SequenceStep(t, n, k, p, True), here
            elif here > 0 and method == "fixed-sequence" and not stopped:
                stopped, stopped_at = True, t
            carried = here if ok else 0.0
        steps.append(SequenceStep(t, n, k, p, ok))
    # the best agreement any threshold can certify (the "by how much" of an infeasible target)
    seen: set[tuple[int, int]] = set()
    for st in steps:
        if st.n == 0 or (st.n, st.k) in seen:
            continue
        seen.add((st.n, st.k))
        lcb = 1.0 - upper_bound(st.k, st.n, level)
        if lcb > best_bound + 1e-12:
            best_bound, best_t = lcb, st.threshold
    if chosen is None:
        return CalibrationResult(
            target, delta, method, n_total, None, 0.0, None, None, False,
            max(0.0, target - best_bound), best_bound, best_t, n_start, steps, stopped_at,
        )
    return CalibrationResult(
        target, delta, method, n_total, chosen.threshold,
        chosen.n / n_total if n_total else 0.0,
        1.0 - chosen.k / chosen.n,
        1.0 - upper_bound(chosen.k, chosen.n, chosen_level),
        True, 0.0, best_bound, best_t, n_start, steps, stopped_at,
    )


def max_feasible_target(
    scores: Sequence[float] | np.ndarray,
    agree: Sequence[bool] | np.ndarray,
    delta: float,
    *,
    grid: Sequence[float] | None = None,
    method: str = "fixed-sequence",
    resolution: float = 0.001,
) -> float | None:
    """The highest target (to ``resolution``) that these votes can be calibrated for, or None."""
    if not calibrate_threshold(scores, agree, resolution, delta, grid=grid, method=method).feasible:
        return None
    lo, hi = resolution, 1.0 - resolution
    while hi - lo > resolution:
        mid = 0.5 * (lo + hi)
        if calibrate_threshold(scores, agree, mid, delta, grid=grid, method=method).feasible:
            lo = mid
        else:
            hi = mid
    return round(lo, 6)
