"""Pure metrics over labels and costs: agreement, accuracy, recall, percentiles, the Pareto front.

Conventions: an abstention (``None``) never agrees with anything, not even another abstention,
and is never correct.  Agreement and accuracy are shares of *all* items.  ``percentile``
interpolates linearly between order statistics (NumPy's default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Label = str | None

NAN = float("nan")


# ---------------------------------------------------------------- label metrics


def _check_len(a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)}")


def agreement(a: Sequence[Label], b: Sequence[Label]) -> float:
    """Share of items on which both answered with the same label (NaN for no items)."""
    _check_len(a, b)
    if not a:
        return NAN
    return sum(x is not None and x == y for x, y in zip(a, b, strict=True)) / len(a)


def agreement_matrix(labels: Mapping[str, Sequence[Label]]) -> dict[str, dict[str, float]]:
    """Agreement of every model with every other model (1.0 on the diagonal unless it abstained)."""
    names = list(labels)
    return {a: {b: agreement(labels[a], labels[b]) for b in names} for a in names}


def accuracy(pred: Sequence[Label], gold: Sequence[Label]) -> float:
    """Share of items with a gold label that are predicted correctly (abstention = wrong)."""
    _check_len(pred, gold)
    pairs = [(p, g) for p, g in zip(pred, gold, strict=True) if g is not None]
    if not pairs:
        return NAN
    return sum(p == g for p, g in pairs) / len(pairs)


def recall_per_label(
    pred: Sequence[Label], gold: Sequence[Label], labels: Sequence[str] | None = None
) -> dict[str, float]:
    """Recall of each gold label that occurs (labels that never occur in gold are left out)."""
    _check_len(pred, gold)
    classes = list(labels) if labels is not None else sorted({g for g in gold if g is not None})
    out: dict[str, float] = {}
    for c in classes:
        support = [p for p, g in zip(pred, gold, strict=True) if g == c]
        if support:
            out[c] = sum(p == c for p in support) / len(support)
    return out


def macro_recall(
    pred: Sequence[Label], gold: Sequence[Label], labels: Sequence[str] | None = None
) -> float:
    """Mean recall over the gold labels that occur (TweetEval's official metric)."""
    per = recall_per_label(pred, gold, labels)
    if not per:
        return NAN
    return sum(per.values()) / len(per)


def coverage(decided_by_workers: Sequence[bool]) -> float:
    """Share of items the workers decided (the judge was not called)."""
    if not decided_by_workers:
        return NAN
    return sum(bool(d) for d in decided_by_workers) / len(decided_by_workers)


def judge_call_rate(judge_called: Sequence[bool]) -> float:
    """Share of items sent to the judge."""
    if not judge_called:
        return NAN
    return sum(bool(d) for d in judge_called) / len(judge_called)


# ---------------------------------------------------------------- cost metrics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between order statistics."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if len(values) == 0:
        return NAN
    return float(np.percentile(np.asarray(values, dtype=float), q))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else NAN


def speedup(baseline_time: float, cascade_time: float) -> float:
    """How many times faster the cascade is than the baseline (judge alone): base / cascade."""
    if cascade_time < 0 or baseline_time < 0:
        raise ValueError("times must be non-negative")
    if cascade_time == 0:
        return math.inf if baseline_time > 0 else NAN
    return baseline_time / cascade_time


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher quality (y).

    A point is dominated when another has ``x <= x_i`` and ``y >= y_i`` with one strictly better.
    Duplicates of a front point are all kept.  NaN points are never on the front.  The result is
    sorted by cost.
    """
    ok = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front: list[int] = []
    for i in ok:
        xi, yi = points[i]
        dominated = False
        for j in ok:
            if j == i:
                continue
            xj, yj = points[j]
            if xj <= xi and yj >= yi and (xj < xi or yj > yi):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def clean(x: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become null (recursively)."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x
