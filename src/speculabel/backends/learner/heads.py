"""Heads a learner can fit besides plain logistic regression, each stored as arrays (no pickle).

* :class:`TemperedLogistic`: logistic regression whose probabilities are softened or sharpened
  by one temperature ``T`` (``softmax(z / T)``), fitted on out-of-fold predictions of the fit
  labels (:func:`fit_temperature`).  Why: a certificate thresholds on the worker's confidence,
  and a confident-majority rule compares confidences of different workers; a head fitted with
  little regularisation is over-confident, one fitted with much is under-confident.  ``T`` never
  changes a vote, only how sure the worker says it is.
* :class:`CosineKNN`: a vote of the ``k`` labelled items nearest in cosine similarity (the
  embeddings have unit length), each weighted by its similarity.  Why: a nearest-neighbour vote
  copies the labeller's local quirks that a linear head smooths away, and it needs no fitting.

Both are scikit-learn estimators whose fitted state is plain arrays and numbers, so
:mod:`.persist` stores them like the logistic head.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

#: temperatures searched (log scale): from 5x sharper to 20x softer
T_BOUNDS = (0.2, 20.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def logits(decision: np.ndarray) -> np.ndarray:
    """Per-class logits from ``decision_function`` (two classes: one column, ``[0, z]``)."""
    d = np.asarray(decision, dtype=float)
    return np.column_stack([np.zeros_like(d), d]) if d.ndim == 1 else d


def fit_temperature(z: np.ndarray, truth: np.ndarray) -> float:
    """The ``T`` that minimises the log-loss of ``softmax(z / T)`` for class indices ``truth``
    (held-out logits: fitting it on the head's own training logits would only sharpen it)."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(truth))

    def nll(log_t: float) -> float:
        p = _softmax(z / np.exp(log_t))
        return float(-np.log(np.maximum(p[rows, truth], 1e-12)).mean())

    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
    return float(np.exp(res.x))


class TemperedLogistic(LogisticRegression):
    """Logistic regression with a fitted temperature (``temperature_``, 1.0 until set)."""

    def predict_proba(self, X: Any) -> np.ndarray:
        t = float(getattr(self, "temperature_", 1.0))
        return _softmax(logits(self.decision_function(X)) / t)


def out_of_fold_temperature(head: LogisticRegression, x: np.ndarray, y: np.ndarray,
                            folds: int = 3, seed: int = 0) -> float:
    """Fit ``T`` on out-of-fold logits of ``head``'s settings over (x, y); 1.0 when there are
    too few labels for two folds."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    classes, truth, counts = np.unique(y, return_inverse=True, return_counts=True)
    k = min(folds, int(counts.min()))
    if k < 2 or len(classes) < 2:
        return 1.0
    z = np.zeros((len(y), len(classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
            m = clone(head).fit(x[tr], y[tr])
            cols = [int(np.searchsorted(classes, c)) for c in m.classes_]
            zz = logits(m.decision_function(x[te]))
            full = np.full((len(te), len(classes)), -30.0)  # a class the fold never saw
            full[:, cols] = zz
            z[te] = full
    return fit_temperature(z, truth)


class CosineKNN(ClassifierMixin, BaseEstimator):
    """Similarity-weighted vote of the ``k`` nearest labelled items (unit-length features).

    ``predict_proba`` is ``(weights of each class + prior) / (total + prior x classes)``: a
    unanimous vote of near neighbours is close to 1, a split one or a far one lower."""

    def __init__(self, k: int = 15, prior: float = 0.5) -> None:
        self.k = k
        self.prior = prior

    def fit(self, X: Any, y: Any) -> CosineKNN:
        x = np.asarray(X, dtype=np.float32)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        self.x_ = x
        self.y_ = codes.astype(np.int64)
        self.n_features_in_ = x.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        x = np.asarray(X, dtype=np.float32)
        sims = x @ self.x_.T
        k = max(1, min(int(self.k), sims.shape[1]))
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sims, near, axis=1), 0.0)
        votes = np.zeros((len(x), len(self.classes_)))
        for j in range(k):
            np.add.at(votes, (np.arange(len(x)), self.y_[near[:, j]]), w[:, j])
        votes += float(self.prior)
        out: np.ndarray = votes / votes.sum(axis=1, keepdims=True)
        return out

    def predict(self, X: Any) -> np.ndarray:
        out: np.ndarray = self.classes_[self.predict_proba(X).argmax(axis=1)]
        return out
