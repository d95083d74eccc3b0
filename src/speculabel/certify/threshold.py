"""The loosest threshold of a rule that a calibration set certifies (Criterion 2, made safe).

On a calibration set where every item has a *reference* label (the judge's, or gold), each item
has a *score* (the rule's support for the workers' label; accepted at threshold ``t`` when the
score is at least ``t``) and an *agree* flag.  :func:`calibrate_threshold` picks the loosest
threshold ``t`` of a fixed grid such that, with probability at least ``1 - delta`` over the
draw of the calibration set (new items drawn from the same distribution), the quantity of the
chosen *scope* meets the target (see :mod:`speculabel.certify.scope`): agreement on the items
the workers decide (``workers``), agreement over the whole data set with judge-decided items
agreeing (``dataset``), or gold accuracy at most a margin below the judge's (``non-inferior``).
The text below speaks of the ``workers`` scope; the others differ only in their test.

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

from speculabel.certify.scope import SCOPES, Counts, Scope, Tally, needed_items

METHODS = ("fixed-sequence", "fallback", "bonferroni")
FALLBACK_STARTS = 3


def default_grid(step: float = 0.005) -> list[float]:
    """Thresholds from 1.0 down to 0.0 (strict to loose), fixed before seeing any data."""
    n = round(1.0 / step)
    return [round(1.0 - i * step, 6) for i in range(n + 1)]


# ----------------------------------------------------------------------------- threshold search


@dataclass(frozen=True)
class SequenceStep:
    """One threshold of the sequence: ``n`` accepted items, ``k`` of them disagreeing, the
    test's statistic (p-value, or the loss bound for non-inferiority) and whether it passed."""

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
    judge-call rate).  ``agreement``: their empirical agreement with the reference.
    ``estimate``: the point estimate of the certified quantity (agreement on the workers' share;
    whole-data agreement; judge accuracy minus cascade accuracy).  ``bound``: its certified side
    at level ``1 - delta`` (a lower bound on agreement; an upper bound on the accuracy loss).
    ``target``: the agreement target, or the allowed accuracy loss for ``non-inferior``.  When
    no threshold qualifies, ``feasible`` is False, ``threshold`` is None (the workers must
    decide nothing), ``shortfall`` says how far the best bound any grid threshold reaches is
    from the target and ``needed`` how many calibration items any certificate needs at least.
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
    best_bound: float
    best_bound_threshold: float | None
    n_min: int
    steps: list[SequenceStep] = field(default_factory=list, repr=False)
    stopped_at: float | None = None  # fixed-sequence: the first threshold whose test failed
    scope: Scope = "workers"
    estimate: float | None = None
    needed: int = 0

    @property
    def judge_call_rate(self) -> float:
        return 1.0 - self.coverage

    def promise(self) -> str:
        """The certified statement in words."""
        d = f"with probability >= {1 - self.delta:g}"
        if self.scope == "workers":
            return f"agreement >= {self.target:g} on the items the workers decide, {d}"
        if self.scope == "dataset":
            return (f"agreement >= {self.target:g} over the whole data set (judge-decided items "
                    f"agree), {d}")
        return f"gold accuracy at most {self.target:g} below the judge's, {d}"

    def _got(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.scope == "non-inferior":
            return f"accuracy loss {100 * value:+.1f} points"
        return f"{100 * value:.1f}%"

    def message(self, best_target: float | None = None, *, searched: bool = False) -> str:
        """The outcome in words.  With ``searched``, ``best_target`` is the highest target the
        same test reaches on these items (:func:`max_feasible_target`; None: none at all), and
        an unreachable target is explained by that one figure, never by a single threshold's
        bound that the test sequence cannot reach."""
        if self.feasible and self.coverage == 0:
            return (
                f"no threshold lets the workers decide any item: only threshold "
                f"{self.threshold:g}, at which they decide none of the {self.n_items} "
                f"calibration items, is certified ({self.promise()}); a lower target, or "
                f"more calibration items, can let them decide some"
            )
        if self.feasible:
            side = "at most" if self.scope == "non-inferior" else "at least"
            return (
                f"threshold {self.threshold:g}: the workers decide {100 * self.coverage:.1f}% of "
                f"items (judge-call rate {100 * self.judge_call_rate:.1f}%); on {self.n_items} "
                f"calibration items: {self._got(self.estimate)}, {side} {self._got(self.bound)} "
                f"with probability {100 * (1 - self.delta):g}% ({self.promise()})"
            )
        if self.n_items < self.needed:
            return (
                f"no threshold meets the target: {self.promise()} needs at least "
                f"{self.needed} calibration items even with no miss at all; there are "
                f"{self.n_items}"
            )
        if searched and self.scope != "non-inferior":
            return (f"no threshold meets the target ({self.promise()}) on these "
                    f"{self.n_items} items" + self._best_target_text(best_target))
        where = (f" (threshold {self.best_bound_threshold:g})"
                 if self.best_bound_threshold is not None else "")
        if self.shortfall <= 0 and self.best_bound_threshold is not None:
            stop = f" at threshold {self.stopped_at:g}" if self.stopped_at is not None else ""
            return (
                f"no threshold meets the target: threshold {self.best_bound_threshold:g} alone "
                f"would certify {self._got(self.best_bound)}, but the {self.method} test "
                f"sequence (strict to loose) failed earlier{stop}, on too few or too noisy "
                f"items, and may not go past a failure; more calibration items, or "
                f"--method fallback (fresh starts further on), can reach it"
            )
        unit = "points" if self.scope == "non-inferior" else "points of agreement"
        return (
            f"no threshold meets the target ({self.promise()}) on these {self.n_items} items; "
            f"the best any threshold certifies is {self._got(self.best_bound)}{where}, short by "
            f"{100 * self.shortfall:.1f} {unit}"
        )

    def _best_target_text(self, best: float | None) -> str:
        """What these items can certify instead (agreement scopes), and why a single
        threshold's better bound does not count."""
        if self.scope == "non-inferior":
            return ""
        if best is None:
            return (f"; no agreement target at all can be certified with these workers on these "
                    f"items with the {self.method} test (more calibration items, or workers "
                    "that agree more with the reference, can change that)")
        text = (f"; the highest target these workers can be certified for here is about "
                f"{best:.3f} (at delta {self.delta:g}, {self.method} test)")
        if self.best_bound_threshold is not None and self.best_bound > best + 0.005:
            text += (f"; a single threshold ({self.best_bound_threshold:g}) tested on its own "
                     f"would bound the agreement at {self._got(self.best_bound)}, but the test "
                     f"sequence goes from strict to loose and stops at its first failure"
                     + (f" (threshold {self.stopped_at:g})" if self.stopped_at is not None
                        else "") + "; --method fallback restarts it further on")
        return text

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [asdict(s) for s in self.steps if s.n > 0]
        d["judge_call_rate"] = self.judge_call_rate
        d["promise"] = self.promise()
        return d


def calibrate_threshold(
    scores: Sequence[float] | np.ndarray,
    agree: Sequence[bool] | np.ndarray,
    target: float,
    delta: float,
    *,
    grid: Sequence[float] | None = None,
    method: str = "fixed-sequence",
    scope: Scope = "workers",
    judge_right: Sequence[bool] | np.ndarray | None = None,
) -> CalibrationResult:
    """The loosest grid threshold certified for ``scope`` at ``target`` w.p. ``1 - delta``.

    ``scores[i]``: the rule's support for item ``i`` (accepted at threshold ``t`` iff
    ``scores[i] >= t``); ``-inf`` or NaN for an item the rule never accepts (no majority, too
    few answers).  ``agree[i]``: whether the workers' label equals the reference (gold, for
    ``non-inferior``, where ``judge_right[i]`` says whether the judge's label equals gold and
    ``target`` is the allowed accuracy loss).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if scope == "non-inferior":
        if not 0.0 <= target < 1.0:
            raise ValueError(f"the non-inferiority margin must be in [0, 1), got {target}")
    elif not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    s = np.asarray(scores, dtype=float)
    a = np.asarray(agree, dtype=bool)
    if s.shape != a.shape:
        raise ValueError(f"{len(s)} scores but {len(a)} agreement flags")
    j = None if judge_right is None else np.asarray(judge_right, dtype=bool)
    if j is not None and j.shape != a.shape:
        raise ValueError(f"{len(a)} agreement flags but {len(j)} judge flags")
    s = np.where(np.isnan(s), -np.inf, s)
    tally = Tally(scope, s, a, j)
    thresholds = sorted({float(t) for t in (grid if grid is not None else default_grid())},
                        reverse=True)
    n_total = len(s)
    if method == "fixed-sequence":
        level = delta
    elif method == "fallback":
        level = delta / FALLBACK_STARTS
    else:
        level = delta / max(1, len(thresholds))
    n_starts = 1 if method == "fixed-sequence" else FALLBACK_STARTS
    # fallback: a fresh share of delta joins at each start (accepted counts, see Tally.starts)
    starts = tally.starts(target, level, n_starts)
    steps: list[SequenceStep] = []
    chosen: SequenceStep | None = None
    chosen_level = level
    carried = 0.0  # fixed-sequence / fallback: the level passed on by a rejection
    started = 0
    stopped = False
    stopped_at: float | None = None
    counts: dict[float, Counts] = {}
    for t in thresholds:
        c = counts[t] = tally.at(t)
        stat = tally.statistic(c, target, level)
        if method == "bonferroni":
            ok = tally.passes(c, target, level)
            if ok and (chosen is None or c.n >= chosen.n):
                chosen = SequenceStep(t, c.n, c.k, stat, True)
        else:
            # the sequence starts at the first threshold where a test can pass at all
            fresh = 0.0
            while started < n_starts and c.n >= starts[started]:
                fresh += level
                started += 1
            here = carried + fresh
            ok = here > 0 and not stopped and tally.passes(c, target, here)
            if ok:
                chosen, chosen_level = SequenceStep(t, c.n, c.k, stat, True), here
            elif here > 0 and method == "fixed-sequence" and not stopped:
                stopped, stopped_at = True, t
            carried = here if ok else 0.0
        steps.append(SequenceStep(t, c.n, c.k, stat, ok))
    # the best bound any single threshold reaches (the "by how much" of an infeasible target)
    best_bound = 1.0 if scope == "non-inferior" else 0.0
    best_t: float | None = None
    seen: set[Counts] = set()
    for t in thresholds:
        c = counts[t]
        if (scope == "workers" and c.n == 0) or c in seen:
            continue
        seen.add(c)
        b = tally.bound(c, level)
        if tally.better(b, best_bound):
            best_bound, best_t = b, t
    shortfall = (max(0.0, best_bound - target) if scope == "non-inferior"
                 else max(0.0, target - best_bound))
    n_min = min(starts) if scope == "workers" else 0
    needed = needed_items(scope, target, delta)
    if chosen is None:
        return CalibrationResult(
            target, delta, method, n_total, None, 0.0, None, None, False,
            shortfall, best_bound, best_t, n_min, steps, stopped_at, scope=scope, needed=needed,
        )
    c = counts[chosen.threshold]
    return CalibrationResult(
        target, delta, method, n_total, chosen.threshold,
        chosen.n / n_total if n_total else 0.0,
        1.0 - chosen.k / chosen.n if chosen.n else None,
        tally.bound(c, chosen_level),
        True, 0.0, best_bound, best_t, n_min, steps, stopped_at,
        scope=scope, estimate=tally.estimate(c), needed=needed,
    )


def max_feasible_target(
    scores: Sequence[float] | np.ndarray,
    agree: Sequence[bool] | np.ndarray,
    delta: float,
    *,
    grid: Sequence[float] | None = None,
    method: str = "fixed-sequence",
    scope: Scope = "workers",
    resolution: float = 0.001,
) -> float | None:
    """The highest agreement target (to ``resolution``) these votes can be certified for, or
    None (the workers and dataset scopes)."""
    def ok(target: float) -> bool:
        return calibrate_threshold(scores, agree, target, delta, grid=grid, method=method,
                                   scope=scope).feasible

    if not ok(resolution):
        return None
    lo, hi = resolution, 1.0 - resolution
    while hi - lo > resolution:
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return round(lo, 6)
