"""Rank cuts: keep the ``m`` items the workers are most confident about, ties broken by a key.

A score threshold cannot split items that share one confidence (30 % of 2,000 tweets share one
value), so the loosest certifiable threshold may stop far short of what the data allow.  A rank
cut can: items are ordered by score (highest first) and, among equal scores, by a keyed hash of
the item id (BLAKE2b with the tie key; deterministic, and independent of any label).  Because
the order uses only scores, ids and the key, a certificate on the rank
(:mod:`speculabel.certify.finite`) keeps its guarantee; the same key (stored in cascade.toml as
``tie_key``) reproduces the same order, and :func:`apply_cut` the same kept set, at run time.

:class:`RankCut` also stores the boundary as a (score, hash) pair, so one item can be judged on
its own: it is kept when its (score, -hash) is at least the boundary's (lexicographically).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def tie_hash(item_id: str, key: str) -> int:
    """A 64-bit keyed hash of an item id (lower = earlier among equal scores)."""
    h = hashlib.blake2b(str(item_id).encode(), key=key.encode()[:64], digest_size=8)
    return int.from_bytes(h.digest(), "big")


def rank_order(scores: Sequence[float] | np.ndarray, ids: Sequence[str], key: str) -> np.ndarray:
    """Item indices from most to least confident; NaN scores last; ties by :func:`tie_hash`."""
    s = np.asarray(scores, dtype=float)
    if len(s) != len(ids):
        raise ValueError(f"{len(s)} scores but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique for a rank cut")
    s = np.where(np.isnan(s), -np.inf, s)
    hashes = np.array([tie_hash(i, key) for i in ids], dtype=np.uint64)
    return np.lexsort((hashes, -s))  # last key is primary: score descending, then hash


def positions(order: np.ndarray) -> np.ndarray:
    """``positions(order)[i]``: the rank of item ``i`` (0 = most confident)."""
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))
    return pos


@dataclass(frozen=True)
class RankCut:
    """A certified cut: the first ``kept`` of ``n_total`` items in the keyed order.

    ``score`` / ``hash``: the last kept item's score and tie hash (the boundary; None when
    nothing is kept).  ``key``: the tie key.
    """

    kept: int
    n_total: int
    key: str
    score: float | None
    hash: int | None

    def keeps(self, score: float, item_id: str) -> bool:
        """Is this item among the kept ones?  (Same answer as :func:`apply_cut` on the input.)"""
        if self.score is None or self.hash is None or np.isnan(score):
            return False
        if score != self.score:
            return score > self.score
        return tie_hash(item_id, self.key) <= self.hash

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_cut(scores: Sequence[float] | np.ndarray, ids: Sequence[str], key: str,
             kept: int) -> RankCut:
    """The cut that keeps the first ``kept`` items of the keyed order."""
    if not 0 <= kept <= len(ids):
        raise ValueError(f"a cut keeps 0..{len(ids)} items, not {kept}")
    if kept == 0:
        return RankCut(0, len(ids), key, None, None)
    order = rank_order(scores, ids, key)
    last = int(order[kept - 1])
    s = float(np.asarray(scores, dtype=float)[last])
    if np.isnan(s):
        raise ValueError("a cut may not keep items without a score")
    return RankCut(kept, len(ids), key, s, tie_hash(ids[last], key))


def apply_cut(cut: RankCut, scores: Sequence[float] | np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Boolean mask of the items the workers decide under ``cut`` (the judge takes the rest)."""
    return np.array([cut.keeps(float(s), i) for s, i in zip(scores, ids, strict=True)],
                    dtype=bool)
