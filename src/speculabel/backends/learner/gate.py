"""The learner's gate: a small acceptor model whose output is the score a certificate thresholds.

Why: the certified threshold accepts the items whose score is highest, so the better the score
ranks the head's right answers above its wrong ones, the more a certificate covers at the same
target.  The head's top probability alone misses signals that say "this answer is shaky": the
linear head and the neighbour vote disagreeing, a small lead over the runner-up, an item far from
every fitted example of its class, a class with few examples.  The acceptor is a logistic
regression on such features (:func:`gate_features`; standardised, strongly regularised) fitted to
predict "the head's label equals the reference".

Validity: the acceptor is fitted on out-of-fold predictions over the *fit* share only (heads of
the same settings fitted on the other folds), never on a certify item, and it is fixed (stored
in the head) before the threshold is certified, so the certificate holds exactly as for the top
probability.  Banking77, 1,500 labels, draws 0-9 (the score it was chosen by, README):
certified coverage at 0.90 / 0.92 / 0.95 rose from 88.1 / 82.6 / 70.5 % to 88.8 / 84.0 / 72.4 % in
an offline replay of calibrate; margin, entropy and the agreement of the two parts did not
beat the top probability (README, "Many labels: head-to-head with TRACER").

The score travels in the vote itself (:func:`gated`): the head's label keeps the largest
probability, and that probability becomes the acceptor's score, so every rule, saved threshold
and replay reads it unchanged.
"""

from __future__ import annotations

import warnings

import numpy as np

#: folds of the out-of-fold predictions the acceptor is fitted on
GATE_FOLDS = 5
#: the acceptor's regularisation (on standardised features): a few hundred to a thousand
#: out-of-fold examples, so a strong one
GATE_C = 0.1
GATES = ("none", "acceptor")
_CHUNK = 1024


def gate_features(p: np.ndarray, plin: np.ndarray, vote: np.ndarray, x: np.ndarray,
                  memory: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per item (rows of ``x``; ``p`` the head's mixed probabilities, ``plin`` the linear
    head's, ``vote`` the neighbour vote's, all over the head's classes; ``memory`` the fitted
    examples, ``codes`` their class indices): the 15 acceptor features, in a fixed order."""
    n, k = p.shape
    rows = np.arange(n)
    order = np.argsort(p, axis=1, kind="stable")
    j1, j2 = order[:, -1], order[:, -2]
    p1, p2 = p[rows, j1], p[rows, j2]
    ent = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=1) / np.log(max(k, 2))
    ls, vs = np.sort(plin, axis=1), np.sort(vote, axis=1)
    agree = ((plin.argmax(axis=1) == j1) & (vote.argmax(axis=1) == j1)).astype(float)
    near_same = np.full(n, -1.0)
    near_other = np.full(n, -1.0)
    near_any = np.full(n, -1.0)
    top3 = np.full(n, -1.0)
    if len(memory):
        for s in range(0, n, _CHUNK):
            sim = np.asarray(x[s:s + _CHUNK], dtype=np.float32) @ memory.T
            same = codes[None, :] == j1[s:s + _CHUNK, None]
            near_same[s:s + _CHUNK] = np.where(same, sim, -1.0).max(axis=1)
            near_other[s:s + _CHUNK] = np.where(~same, sim, -1.0).max(axis=1)
            near_any[s:s + _CHUNK] = sim.max(axis=1)
            best3 = -np.sort(-np.where(same, sim, -np.inf), axis=1)[:, :3]
            top3[s:s + _CHUNK] = np.where(np.isfinite(best3), best3, -1.0).mean(axis=1)
    count = np.bincount(codes, minlength=k)[j1] if len(codes) else np.zeros(n)
    return np.column_stack([
        p1, p1 - p2, 1.0 - ent, agree, plin[rows, j1], vote[rows, j1], near_same,
        near_same - near_other, np.log(p1 + 1e-9), np.log(p1 - p2 + 1e-9),
        ls[:, -1] - ls[:, -2], vs[:, -1] - vs[:, -2], np.log1p(count), top3, near_any])


def fit_gate(x: np.ndarray, y: np.ndarray, *, C: float, class_weight: str | None, max_iter: int,
             knn_weight: float, temperature: float, init: tuple[np.ndarray, np.ndarray] | None = None,
             seed: int = 0) -> dict[str, np.ndarray] | None:
    """The acceptor's fitted arrays (``gate_mean_``, ``gate_scale_``, ``gate_coef_``,
    ``gate_intercept_``) from out-of-fold predictions on ``(x, y)``: on each fold, the head of
    these settings (its logistic regression, warm-started from ``init``, the whole fit's
    coefficients: the same optimum in half the iterations; and its neighbour vote) fitted on
    the other folds.  None when it cannot be fitted (too few labels for two folds, or every
    out-of-fold answer right, or every one wrong): then the top probability gates."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from speculabel.backends.learner.vote import kernel_vote

    classes, codes_all, counts = np.unique(y, return_inverse=True, return_counts=True)
    n_splits = min(GATE_FOLDS, int(counts.max()) if len(counts) else 0, len(y) // 2)
    if n_splits < 2 or len(classes) < 2:
        return None
    feats, right = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes rarer than the folds; early LR path steps
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y)
        for tr, te in folds:
            seen = np.unique(y[tr])
            if len(seen) < 2:
                continue
            lr = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter,
                                    warm_start=init is not None)
            if init is not None and len(seen) == len(classes) and len(classes) > 2:
                lr.coef_, lr.intercept_ = init[0].copy(), init[1].copy()
            lr.fit(x[tr], y[tr])
            plin = np.zeros((len(te), len(classes)))
            plin[:, np.searchsorted(classes, lr.classes_)] = lr.predict_proba(x[te])
            memory = np.asarray(x[tr], dtype=np.float32)
            vote = kernel_vote(memory, codes_all[tr], len(classes), x[te], temperature)
            p = (1.0 - knn_weight) * plin + knn_weight * vote
            feats.append(gate_features(p, plin, vote, x[te], memory, codes_all[tr]))
            right.append(p.argmax(axis=1) == codes_all[te])
    if not feats:
        return None
    f_all, r_all = np.vstack(feats), np.concatenate(right)
    if r_all.all() or not r_all.any():
        return None
    mean, scale = f_all.mean(axis=0), f_all.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(C=GATE_C, max_iter=5000).fit((f_all - mean) / scale, r_all)
    return {"gate_mean_": mean, "gate_scale_": scale, "gate_coef_": lr.coef_[0].copy(),
            "gate_intercept_": lr.intercept_.copy()}


def gate_score(features: np.ndarray, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray,
               intercept: np.ndarray) -> np.ndarray:
    """The acceptor's probability that the head's label is right."""
    z = ((features - mean) / scale) @ coef + float(intercept[0])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def gated(p: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Distributions whose top entry (the head's label, unchanged) is ``score`` and whose other
    entries share the rest in the head's proportions, blended towards uniform just enough that
    none reaches the top (a score at or below 1/k is raised just above it: every entry of k
    cannot be below 1/k)."""
    n, k = p.shape
    if k < 2 or n == 0:
        return p.copy()
    rows = np.arange(n)
    j1 = p.argmax(axis=1)
    g = np.maximum(np.asarray(score, dtype=float), 1.0 / k + 1e-6)
    rest = p.copy()
    rest[rows, j1] = 0.0
    total = rest.sum(axis=1, keepdims=True)
    rest = np.divide(rest, total, out=np.full_like(rest, 1.0 / (k - 1)), where=total > 0)
    rest[rows, j1] = 0.0
    uniform = 1.0 / (k - 1)
    r = rest.max(axis=1)
    cap = g * (1.0 - 1e-6) / (1.0 - g + 1e-12)  # the largest share a runner-up may have
    lam = np.clip(np.divide(r - cap, r - uniform, out=np.zeros(n), where=r > uniform), 0.0, 1.0)
    lam = np.where(r > cap, lam, 0.0)[:, None]
    other = (1.0 - lam) * rest + lam * np.where(np.arange(k)[None, :] == j1[:, None], 0.0,
                                                uniform)
    out = (1.0 - g)[:, None] * other
    out[rows, j1] = g
    return out
