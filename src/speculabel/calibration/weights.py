"""Reliability weights for ``policy = "weighted"``: how much each worker's vote counts.

Each worker's weight is the log-odds of its measured agreement with the reference, against
chance for ``K`` labels: ``w = log(acc * (K - 1) / (1 - acc))``, the optimal weight of a
symmetric ("one-coin") Dawid-Skene model; a worker at or below chance gets weight 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from speculabel.records import Vote


def reliability_weights(
    votes_by_model: Mapping[str, Sequence[Vote]],
    reference: Sequence[str | None],
    n_labels: int,
    *,
    max_weight: float = 5.0,
) -> dict[str, float]:
    """Log-odds of each worker's agreement with the reference, against chance for K labels.

    ``w = log(acc * (K - 1) / (1 - acc))`` (one-coin Dawid-Skene), ``acc`` smoothed as
    ``(agree + 1) / (answered + K)``; clipped to ``[0, max_weight]``.  Abstentions do not count.
    """
    k = max(2, n_labels)
    out = {}
    for model, votes in votes_by_model.items():
        answered = [(v, r) for v, r in zip(votes, reference, strict=True)
                    if v.label is not None and r is not None]
        agree = sum(v.label == r for v, r in answered)
        acc = (agree + 1) / (len(answered) + k)
        w = math.log(acc * (k - 1) / (1 - acc))
        out[model] = round(min(max_weight, max(0.0, w)), 4)
    return out
