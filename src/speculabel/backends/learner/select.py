"""The learner's regularisation and class weighting, chosen by cross-validation on the labels it
is fitted on (never by a constant tuned for one task).

Why: a head for 3 labels and a few hundred examples wants a strong regulariser (C about 1); one
for 77 intents wants a weak one (C about 100), and class weighting helps when classes are
unbalanced.  :func:`choose` scores each (C, weighting) pair of a small grid by the out-of-fold
log-loss of stratified K-fold cross-validation (the C path is warm-started, so a grid costs a few
plain fits) and keeps the best.  Its cost is bounded by the grid and ``MAX_ITER``, never by a
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

#: C values tried, weak regularisation last (the warm-started path goes from strong to weak)
C_GRID: tuple[float, ...] = (0.3, 3.0, 30.0, 300.0)
WEIGHTINGS: tuple[str | None, ...] = (None, "balanced")
MAX_ITER = 300


@dataclass(frozen=True)
class Choice:
    """The chosen settings and the evidence (mean out-of-fold log-loss per tried pair)."""

    C: float
    class_weight: str | None
    scores: dict[str, float]
    folds: int


def _logistic(C: float, class_weight: str | None, warm: bool = False) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight=class_weight, max_iter=MAX_ITER,
                              warm_start=warm)


def _fold_losses(x: np.ndarray, y: np.ndarray, cw: str | None, cs: Sequence[float],
                 splits: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Mean out-of-fold log-loss for each C (one warm-started path per fold)."""
    classes = np.unique(y)
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index[v] for v in y])
    logp = np.zeros((len(cs), len(y)))
    for tr, te in splits:
        head = _logistic(cs[0], cw, warm=True)
        for j, c in enumerate(cs):
            head.set_params(C=c)
            head.fit(x[tr], y[tr])
            p = head.predict_proba(x[te])
            cols = [index[c_] for c_ in head.classes_]
            full = np.full((len(te), len(classes)), 1e-6)
            full[:, cols] = np.maximum(p, 1e-6)
            logp[j, te] = np.log(full[np.arange(len(te)), truth[te]])
    return [float(-row.mean()) for row in logp]


def choose(x: np.ndarray, y: np.ndarray, *, cs: Sequence[float] = C_GRID,
           weightings: Sequence[str | None] = WEIGHTINGS, folds: int = 3, seed: int = 0
           ) -> Choice:
    """The (C, class_weight) pair of the grid with the lowest out-of-fold log-loss on (x, y).

    Too few labels for two folds: the middle of the grid, unweighted."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    k = min(folds, int(counts.max()) if len(counts) else 0, len(y) // 2)
    if k < 2 or len(counts) < 2:
        return Choice(float(cs[len(cs) // 2]), None, {}, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in a fold; non-converged early path steps
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
        scores: dict[str, float] = {}
        best: tuple[float, float, str | None] | None = None
        for cw in weightings:
            for c, loss in zip(cs, _fold_losses(x, y, cw, cs, splits), strict=True):
                scores[f"C={c:g},class_weight={cw}"] = round(loss, 5)
                if best is None or loss < best[0]:
                    best = (loss, c, cw)
    assert best is not None
    return Choice(float(best[1]), best[2], scores, k)
