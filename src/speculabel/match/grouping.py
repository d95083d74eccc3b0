"""Duplicate groups: the connected components of the accepted matches (union-find).

A ticket with no match is its own group.  A group is named by its first member in the order
given (queue tickets first, in input order), so the same matches always give the same names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
    """For each node, the name of its group: the name of the group's first node in ``names``
    order (``edges`` join node positions)."""
    uf = UnionFind(len(names))
    for a, b in edges:
        uf.union(a, b)
    first: dict[int, str] = {}
    out = []
    for i, name in enumerate(names):
        root = uf.find(i)
        out.append(first.setdefault(root, name))
    return out
