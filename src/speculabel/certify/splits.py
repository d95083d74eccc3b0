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

from speculabel.certify.threshold import calibrate_threshold


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
) -> dict[str, Any]:
    """Calibrate on a random ``cal_frac`` of the items, measure on the rest, ``splits`` times."""
    rng = np.random.default_rng(seed)
    n = len(scores)
    n_cal = max(1, min(n - 1, round(cal_frac * n)))
    violated = violated_pop = feasible = 0
    coverage: list[float] = []
    agreement: list[float] = []
    thresholds: list[float] = []
    for _ in range(splits):
        perm = rng.permutation(n)
        c, t = perm[:n_cal], perm[n_cal:]
        res = calibrate_threshold(scores[c], agree[c], target, delta, method=method)
        if not res.feasible or res.threshold is None:
            coverage.append(0.0)
            continue
        feasible += 1
        thresholds.append(res.threshold)
        acc = scores[t] >= res.threshold
        coverage.append(float(acc.mean()))
        if acc.any():
            a = float(agree[t][acc].mean())
            agreement.append(a)
            violated += a < target
        # the guarantee is about the population the calibration items were drawn from: here,
        # all the items (the test half alone adds its own sampling noise)
        pop = scores >= res.threshold
        violated_pop += bool(pop.any()) and float(agree[pop].mean()) < target
    return {
        "splits": splits,
        "calibration_items": int(n_cal),
        "test_items": int(n - n_cal),
        "feasible_share": feasible / splits,
        "violation_rate": violated / splits,
        "population_violation_rate": violated_pop / splits,
        "mean_threshold": float(np.mean(thresholds)) if thresholds else None,
        "mean_test_coverage": float(np.mean(coverage)),
        "mean_test_agreement": float(np.mean(agreement)) if agreement else None,
        "min_test_agreement": float(np.min(agreement)) if agreement else None,
    }
