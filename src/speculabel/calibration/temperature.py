"""Temperature scaling: divide log-probabilities by ``T``, fitted by likelihood on reference labels.

It never changes a model's own arg-max, only how confident it claims to be (which matters when
several workers' confidences are averaged or weighted).  The transform itself is
:func:`speculabel.backends.calibrated.calibrate_vote`, the function the cascade applies at run
time, so calibration and classification see identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from speculabel.backends.calibrated import calibrate_vote
from speculabel.records import Vote


def apply_calibration(
    votes: Sequence[Vote], offsets: Mapping[str, float] | None = None, temperature: float = 1.0
) -> list[Vote]:
    """The same transform the cascade applies at run time (``calibrate_vote``)."""
    if not offsets and temperature == 1.0:
        return list(votes)
    return [calibrate_vote(v, dict(offsets or {}), temperature) for v in votes]


def logprob_matrix(
    votes: Sequence[Vote], labels: Sequence[str], offsets: Mapping[str, float] | None
) -> np.ndarray:
    """Log-probabilities (minus offsets) per vote and label."""
    off = np.array([(offsets or {}).get(lab, 0.0) for lab in labels])
    m = np.array([[math.log(max(v.probs.get(lab, 0.0), 1e-12)) for lab in labels] for v in votes])
    return m - off if len(votes) else np.zeros((0, len(labels)))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``softmax(logits / T)``."""
    from scipy.special import log_softmax

    z = log_softmax(logits / temperature, axis=1)
    return float(-np.mean(z[np.arange(len(y)), y]))


def fit_temperature(
    votes: Sequence[Vote],
    reference: Sequence[str],
    labels: Sequence[str],
    offsets: Mapping[str, float] | None = None,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """Temperature minimising log-loss against the reference (bounded search on log T).

    Abstentions and items whose reference is not a known label are ignored.
    """
    from scipy.optimize import minimize_scalar

    idx = {lab: j for j, lab in enumerate(labels)}
    keep = [(v, r) for v, r in zip(votes, reference, strict=True)
            if v.label is not None and v.probs and r in idx]
    if len(keep) < 2:
        return 1.0
    logits = logprob_matrix([v for v, _ in keep], labels, offsets)
    y = np.array([idx[r] for _, r in keep])
    res = minimize_scalar(lambda lt: nll(logits, y, math.exp(lt)),
                          bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return round(math.exp(float(res.x)), 4)
