"""Duplicate groups from the decided pairs.

Two ways (``grouping``):

* ``cohesive`` (the default): start from single tickets and repeatedly merge the two groups
  whose links are the largest share of the smaller group's links, ``(matches - AGAINST x
  non-matches between them) / min(volume)`` where a group's volume is the summed ``p`` of its
  tickets' matches, while that share is at least :data:`SHARE`.  Why: under union-find one
  wrong match chains two whole intents into one group; here one match between two groups of a
  dozen tickets is too small a share of their links, and pairs decided *not* similar count
  against the merge.  The share is local (no term for the size of the queue, unlike modularity,
  which splits a group holding more than about 1 / resolution of the queue's matches), and a
  group only ever merges across a match, so every group is linked by matches and lies inside
  one connected component.
* ``components``: the connected components of the matches (union-find), every chain of matches
  one group.

A ticket with no match is its own group.  A group is named by its first member in the order
given (queue tickets first, in input order), so the same matches always give the same names.
Both are deterministic (ties broken by position, no random numbers).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

GROUPINGS = ("cohesive", "components")
DEFAULT_GROUPING = "cohesive"
#: least share of the smaller group's match weight that its links to another must reach, and
#: the weight of a non-match against a match: chosen on the match bench's tune queue (best ARI
#: among the settings that do not lose to union-find on a Zipf-skewed stress queue; README)
SHARE = 0.05
AGAINST = 0.25
Edge = tuple[int, int, float]


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True


def groups(names: Sequence[str], edges: Iterable[tuple[int, int]]) -> list[str]:
    """For each node, the name of its connected component: the name of the component's first
    node in ``names`` order (``edges`` join node positions)."""
    uf = UnionFind(len(names))
    for a, b in edges:
        uf.union(a, b)
    return _named(names, [uf.find(i) for i in range(len(names))])


def grouped(names: Sequence[str], matches: Sequence[Edge], grouping: str = DEFAULT_GROUPING,
            non_matches: Sequence[Edge] = (), share: float = SHARE,
            against: float = AGAINST) -> list[str]:
    """For each node, its group's name.  ``matches``: ``(a, b, p)`` between node positions;
    ``non_matches``: ``(a, b, weight)`` of pairs decided not similar (``cohesive`` only)."""
    if grouping == "components":
        return groups(names, ((a, b) for a, b, _ in matches))
    if grouping != "cohesive":
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    return _named(names, cohesive(len(names), matches, non_matches, share, against))


def cohesive(n: int, matches: Iterable[Edge], non_matches: Iterable[Edge] = (),
             share: float = SHARE, against: float = AGAINST) -> list[int]:
    """A root per node: greedy merging of the pair of groups with the largest link share (see
    the module docstring) while it is at least ``share`` (> 0: groups merge across a match)."""
    if share <= 0:
        raise ValueError(f"share must be above 0, got {share:g}")
    link: list[dict[int, float]] = [{} for _ in range(n)]
    volume = [0.0] * n
    for a, b, w in matches:
        if a != b and w > 0:
            link[a][b] = link[a].get(b, 0.0) + w
            link[b][a] = link[b].get(a, 0.0) + w
            volume[a] += w
            volume[b] += w
    for a, b, w in non_matches:  # a link of negative weight: it counts against a merge
        if a != b and w > 0:
            link[a][b] = link[a].get(b, 0.0) - against * w
            link[b][a] = link[b].get(a, 0.0) - against * w
    size = [1] * n
    uf = UnionFind(n)

    def score(a: int, b: int) -> float:
        low = min(volume[a], volume[b])
        return link[a][b] / low if low > 0 else 0.0

    heap = [(-score(a, b), a, b) for a in range(n) for b in link[a] if a < b]
    heapq.heapify(heap)
    while heap:
        neg, a, b = heapq.heappop(heap)
        if b not in link[a] or score(a, b) != -neg:  # merged away, or a stale score
            continue
        if -neg < share:
            break
        if size[a] < size[b]:
            a, b = b, a
        for c, w in link[b].items():  # b's links become a's
            if c != a:
                link[a][c] = link[a].get(c, 0.0) + w
                del link[c][b]
                link[c][a] = link[a][c]
        del link[a][b]
        link[b] = {}
        uf.parent[b] = a
        size[a] += size[b]
        volume[a] += volume[b]
        for c in link[a]:
            x, y = (a, c) if a < c else (c, a)
            heapq.heappush(heap, (-score(x, y), x, y))
    return [uf.find(i) for i in range(n)]


def _named(names: Sequence[str], roots: Sequence[int]) -> list[str]:
    first: dict[int, str] = {}
    return [first.setdefault(root, name) for name, root in zip(names, roots, strict=True)]
