"""Does a certified threshold keep its promise?  Calibrate on a random share of labelled items,
check on the rest, many times; the share of splits that miss the target estimates the
probability the guarantee fails, which must not exceed ``delta``.

Two rates: on the held-out part (what a user sees, but that part is a sample too, so sampling
noise alone drops it below the target when the certified agreement sits just above it), and on
the *population*: all the items, from which the calibration part was drawn, which is exactly what
the guarantee is about.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from speculabel.certify.scope import Scope
from speculabel.certify.threshold import calibrate_threshold


def achieved(scope: Scope, accepted: np.ndarray, agree: np.ndarray,
             judge_right: np.ndarray | None) -> float | None:
    """The scope's quantity on these items when the workers decide ``accepted``: agreement on
    the accepted items (workers), whole-set agreement (dataset), or judge accuracy minus cascade
    accuracy (non-inferior)."""
    if scope == "workers":
        return float(agree[accepted].mean()) if accepted.any() else None
    if scope == "dataset":
        return 1.0 - float((accepted & ~agree).mean())
    assert judge_right is not None
    return float((accepted & ~agree & judge_right).mean() - (accepted & agree & ~judge_right).mean())


def misses(scope: Scope, value: float | None, target: float) -> bool:
    if value is None:
        return False
    return value > target if scope == "non-inferior" else value < target


def split_check(
    scores: np.ndarray,
    agree: np.ndarray,
    target: float,
    delta: float,
    *,
    splits: int,
    cal_frac: float,
    seed: int,
    method: str = "fixed-sequence",
    scope: Scope = "workers",
    judge_right: np.ndarray | None = None,
) -> dict[str, Any]:
    """Certify on a random ``cal_frac`` of the items, check on the rest, ``splits`` times."""
    rng = np.random.default_rng(seed)
    n = len(scores)
    n_cal = max(1, min(n - 1, round(cal_frac * n)))
    violated = violated_pop = feasible = 0
    coverage: list[float] = []
    values: list[float] = []
    thresholds: list[float] = []
    for _ in range(splits):
        perm = rng.permutation(n)
        c, t = perm[:n_cal], perm[n_cal:]
        jr = None if judge_right is None else judge_right[c]
        res = calibrate_threshold(scores[c], agree[c], target, delta, method=method, scope=scope,
                                  judge_right=jr)
        if not res.feasible or res.threshold is None:
            coverage.append(0.0)
            continue
        feasible += 1
        thresholds.append(res.threshold)
        acc = scores[t] >= res.threshold
        coverage.append(float(acc.mean()))
        v = achieved(scope, acc, agree[t], None if judge_right is None else judge_right[t])
        if v is not None:
            values.append(v)
        violated += misses(scope, v, target)
        # the guarantee is about the population the calibration items were drawn from: here,
        # all the items (the test part alone adds its own sampling noise)
        pop = achieved(scope, scores >= res.threshold, agree, judge_right)
        violated_pop += misses(scope, pop, target)
    worst = None
    if values:
        worst = max(values) if scope == "non-inferior" else min(values)
    return {
        "scope": scope,
        "splits": splits,
        "calibration_items": int(n_cal),
        "test_items": int(n - n_cal),
        "feasible_share": feasible / splits,
        "violation_rate": violated / splits,
        "population_violation_rate": violated_pop / splits,
        "mean_threshold": float(np.mean(thresholds)) if thresholds else None,
        "mean_test_coverage": float(np.mean(coverage)),
        "mean_test_value": float(np.mean(values)) if values else None,
        "worst_test_value": worst,
    }
