"""Candidate pairs: each ticket's nearest neighbours by the cosine of its MiniLM embedding.

Asking the judge about every pair of a queue is impossible (a million pairs for 1,500 tickets);
the cascade is asked only about each ticket's ``k`` nearest neighbours whose cosine reaches a
floor.  Small inputs are searched exactly with numpy (a blocked matrix product); from
:data:`EXACT_MAX` vectors on, an HNSW index (usearch, when installed) answers instead, which is
approximate: its recall against the exact search is measured by the bench.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: up to this many searched vectors the exact numpy search is used (about 0.3 s per 10,000
#: queries against 10,000 vectors on 2 cores)
EXACT_MAX = 20_000
_BLOCK = 1024


@dataclass(frozen=True)
class Pair:
    """A candidate: ticket ``a`` (a queue position) and ``b`` (a queue position, or a past
    ticket's position when ``past``), and their cosine."""

    a: int
    b: int
    cosine: float
    past: bool = False


def top_k(queries: np.ndarray, base: np.ndarray, k: int, *, same: bool,
          engine: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """For each query row: the indices and cosines of its ``k`` nearest base rows, best first
    (rows are unit vectors).  ``same``: queries and base are the same vectors, so a row is
    never its own neighbour.  Shapes ``(len(queries), k')`` with ``k' = min(k, usable)``."""
    n_base = len(base) - (1 if same else 0)
    kk = min(k, max(n_base, 0))
    if len(queries) == 0 or kk == 0:
        return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0))
    use_index = engine == "usearch" or (engine == "auto" and len(base) > EXACT_MAX
                                         and _has_usearch())
    if use_index:
        return _usearch_top_k(queries, base, kk, same)
    return _exact_top_k(queries, base, kk, same)


def _has_usearch() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def _exact_top_k(queries: np.ndarray, base: np.ndarray, k: int,
                 same: bool) -> tuple[np.ndarray, np.ndarray]:
    idx = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float64)
    for start in range(0, len(queries), _BLOCK):
        s = queries[start:start + _BLOCK] @ base.T
        if same:
            rows = np.arange(len(s))
            s[rows, rows + start] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)  # best first, ties by index: deterministic
        idx[start:start + len(s)] = np.take_along_axis(part, order, axis=1)
        sims[start:start + len(s)] = np.take_along_axis(vals, order, axis=1)
    return idx, sims


def _usearch_top_k(queries: np.ndarray, base: np.ndarray, k: int,
                   same: bool) -> tuple[np.ndarray, np.ndarray]:
    from usearch.index import Index

    index = Index(ndim=base.shape[1], metric="cos", dtype="f32")
    index.add(np.arange(len(base)), base.astype(np.float32), threads=0)
    want = k + (1 if same else 0)
    found = index.search(queries.astype(np.float32), want, threads=0)
    keys = np.asarray(found.keys).reshape(len(queries), -1)
    dist = np.asarray(found.distances, dtype=np.float64).reshape(len(queries), -1)
    idx = np.full((len(queries), k), -1, dtype=np.int64)
    sims = np.full((len(queries), k), -np.inf)
    for q in range(len(queries)):
        got = [(int(j), 1.0 - float(d)) for j, d in zip(keys[q], dist[q], strict=True)
               if 0 <= int(j) < len(base) and not (same and int(j) == q)][:k]
        for c, (j, s) in enumerate(got):
            idx[q, c], sims[q, c] = j, s
    return idx, sims


def candidate_pairs(queue: np.ndarray, past: np.ndarray | None, k: int, floor: float,
                    engine: str = "auto") -> list[Pair]:
    """Every ticket's ``k`` nearest neighbours in the queue and, separately, its ``k`` nearest
    past tickets, kept when their cosine is at least ``floor``.  A queue pair found from both
    sides is listed once (``a < b``); the list is sorted, so the same input gives the same
    pairs in the same order."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    seen: dict[tuple[int, int, bool], float] = {}
    idx, sims = top_k(queue, queue, k, same=True, engine=engine)
    for q in range(len(queue)):
        for j, s in zip(idx[q], sims[q], strict=True):
            if j >= 0 and s >= floor:
                key = (min(q, int(j)), max(q, int(j)), False)
                seen[key] = max(seen.get(key, -1.0), float(s))
    if past is not None and len(past):
        pidx, psims = top_k(queue, past, k, same=False, engine=engine)
        for q in range(len(queue)):
            for j, s in zip(pidx[q], psims[q], strict=True):
                if j >= 0 and s >= floor:
                    seen[(q, int(j), True)] = float(s)
    return [Pair(a, b, round(s, 6), p) for (a, b, p), s in sorted(seen.items())]
