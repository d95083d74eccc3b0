"""The soft nearest-neighbour vote shared by the mixed head, its acceptor gate and the settings'
cross-validation (one module below all three, so none of them imports another for it)."""

from __future__ import annotations

import numpy as np


def kernel_vote(memory: np.ndarray, codes: np.ndarray, n_classes: int, x: np.ndarray,
                temperature: float, chunk: int = 1024) -> np.ndarray:
    """Soft nearest-neighbour class probabilities of the rows of ``x`` (see the module)."""
    out = np.zeros((len(x), n_classes))
    onehot = np.zeros((len(codes), n_classes))
    onehot[np.arange(len(codes)), codes] = 1.0
    for s in range(0, len(x), chunk):
        sim = np.asarray(x[s:s + chunk], dtype=np.float32) @ memory.T
        w = np.exp((sim - sim.max(axis=1, keepdims=True)) / temperature)
        out[s:s + chunk] = w @ onehot
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, 1.0 / n_classes), where=total > 0)
