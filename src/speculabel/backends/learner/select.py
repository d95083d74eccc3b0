"""The learner's regularisation and class weighting, chosen by cross-validation on the labels it
is fitted on (never by a constant tuned for one task).

Why: a head for 3 labels and a few hundred examples wants a strong regulariser (C about 1); one
for 77 intents wants a weak one (C about 100), and class weighting helps when classes are
unbalanced.  :func:`choose` scores each (C, weighting) pair of a small grid by the out-of-fold
log-loss of stratified K-fold cross-validation (the C path is warm-started, so a grid costs a few
plain fits) and keeps the best; then the weight of a nearest-neighbour vote mixed into that head
(:mod:`.mixhead`, weight 0 included) and the vote's temperature, by the same out-of-fold
log-loss.  Its cost is bounded by the grid and ``MAX_ITER``, never by a
clock: the choice must be the same on every run (``calibrate`` may fit the same share twice and
ships the second fit under the first one's certificate).

Nothing here touches the certify share: selection sees only the fit share, so a certificate
computed afterwards on the certify share stays valid.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: C values tried, weak regularisation last (the warm-started path goes from strong to weak);
#: 77 intents from 1,000 labels choose 100-300, so the grid reaches well past that
C_GRID: tuple[float, ...] = (0.3, 3.0, 30.0, 100.0, 300.0, 1000.0)
WEIGHTINGS: tuple[str | None, ...] = (None, "balanced")
#: weights of the neighbour vote mixed into the chosen head (0: the linear head alone)
KNN_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
KNN_TEMPERATURES: tuple[float, ...] = (0.02, 0.05)
MAX_ITER = 300


@dataclass(frozen=True)
class Choice:
    """The chosen settings and the evidence (mean out-of-fold log-loss per tried pair)."""

    C: float
    class_weight: str | None
    scores: dict[str, float]
    folds: int
    knn_weight: float = 0.0
    temperature: float = 0.05


def _logistic(C: float, class_weight: str | None, warm: bool = False) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight=class_weight, max_iter=MAX_ITER,
                              warm_start=warm)


def _out_of_fold(x: np.ndarray, y: np.ndarray, cw: str | None, cs: Sequence[float],
                 splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold probabilities (``len(cs) x n x classes``) for each C (one warm-started path
    per fold); a class a fold never saw gets 0."""
    classes = np.unique(y)
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(cs), len(y), len(classes)))
    for tr, te in splits:
        head = _logistic(cs[0], cw, warm=True)
        cols = None
        for j, c in enumerate(cs):
            head.set_params(C=c)
            head.fit(x[tr], y[tr])
            cols = np.array([index[c_] for c_ in head.classes_]) if cols is None else cols
            out[j][np.ix_(te, cols)] = head.predict_proba(x[te])
    return out


def _losses(proba: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean log-loss of each leading-axis slice of ``proba`` (floored at 1e-6)."""
    picked = proba[..., np.arange(len(truth)), truth]
    return np.asarray(-np.log(np.maximum(picked, 1e-6)).mean(axis=-1))


def _neighbour_votes(x: np.ndarray, truth: np.ndarray, n_classes: int, temperature: float,
                     splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold neighbour votes (see :func:`.vote.kernel_vote`)."""
    from speculabel.backends.learner.vote import kernel_vote

    out = np.zeros((len(truth), n_classes))
    for tr, te in splits:
        out[te] = kernel_vote(np.asarray(x[tr], np.float32), truth[tr], n_classes, x[te],
                              temperature)
    return out


def choose(x: np.ndarray, y: np.ndarray, *, cs: Sequence[float] = C_GRID,
           weightings: Sequence[str | None] = WEIGHTINGS, folds: int = 3, seed: int = 0,
           knn_weights: Sequence[float] = KNN_WEIGHTS,
           temperatures: Sequence[float] = KNN_TEMPERATURES) -> Choice:
    """The (C, class_weight) pair of the grid with the lowest out-of-fold log-loss on (x, y),
    then the neighbour vote's (weight, temperature) mixed into it, by the same loss.

    Too few labels for two folds: the middle of the grid, unweighted, no neighbour vote."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    k = min(folds, int(counts.max()) if len(counts) else 0, len(y) // 2)
    if k < 2 or len(counts) < 2:
        return Choice(float(cs[len(cs) // 2]), None, {}, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in a fold; non-converged early path steps
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
        classes = np.unique(y)
        truth = np.searchsorted(classes, y)
        scores: dict[str, float] = {}
        best: tuple[float, float, str | None] | None = None
        best_p: np.ndarray | None = None
        for cw in weightings:
            probs = _out_of_fold(x, y, cw, cs, splits)
            for c, loss, p in zip(cs, _losses(probs, truth), probs, strict=True):
                scores[f"C={c:g},class_weight={cw}"] = round(float(loss), 5)
                if best is None or loss < best[0]:
                    best, best_p = (float(loss), c, cw), p
        assert best is not None and best_p is not None
        mix = (best[0], 0.0, KNN_TEMPERATURES[-1])
        for temp in temperatures if any(w > 0 for w in knn_weights) else ():
            vote = _neighbour_votes(x, truth, len(classes), temp, splits)
            for w in (w for w in knn_weights if w > 0):
                loss = float(_losses((1 - w) * best_p + w * vote, truth))
                scores[f"knn_weight={w:g},temperature={temp:g}"] = round(loss, 5)
                if loss < mix[0]:
                    mix = (loss, w, temp)
    return Choice(float(best[1]), best[2], scores, k, float(mix[1]), float(mix[2]))
