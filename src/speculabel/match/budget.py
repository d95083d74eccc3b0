"""The pair stage under a judge budget: the workers first, then the judge on the pairs whose
answer can change the groups most, a batch at a time, until the budget is spent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from speculabel.match.grouping import UnionFind
from speculabel.records import Item, Record

if TYPE_CHECKING:
    from speculabel.match.candidates import Pair


def budgeted(cascade: Any, todo: Sequence[int], items: Sequence[Item], cands: Sequence[Pair],
             keys: Sequence[str], decided: dict[str, dict[str, Any]],
             keep: Callable[[int, Record | None], None], budget: int, label: str) -> None:
    """The pair stage with at most ``budget`` judge calls in all (earlier runs' included).

    First the workers alone (the cascade without its judge): what they decide is kept; then
    the pairs they leave go to the judge a batch at a time, re-ranked after each: pairs already
    inside one group last (an answer changes nothing), pairs of tickets without a match first,
    then by the workers' probability of a match, until the budget is spent; the rest are kept
    as ``over_budget`` (``keep(i, None)``: no match reported, never asked)."""
    judge = cascade.judge
    escalated: list[tuple[int, Record]] = []
    cascade.judge = None
    try:
        for rec in cascade.classify_iter(items):
            if rec.error_kind == "no_judge" and rec.judge_vote is None:
                escalated.append((todo[rec.position], rec))
            else:
                keep(todo[rec.position], rec)
    finally:
        cascade.judge = judge
    n_queue = 1 + max((x for p in cands for x in (p.a, -1 if p.past else p.b)), default=0)
    n_past = 1 + max((p.b for p in cands if p.past), default=0)
    uf = UnionFind(n_queue + n_past)

    def node(p: Pair) -> tuple[int, int]:
        return p.a, (n_queue + p.b if p.past else p.b)

    matched: set[int] = set()

    def join(p: Pair) -> None:
        a, b = node(p)
        matched.update((a, b))
        uf.union(a, b)

    for p, k in zip(cands, keys, strict=True):
        e = decided.get(k)
        if e is not None and e.get("label") == label:
            join(p)
    spent = sum(1 for e in decided.values() if e.get("decided_by") == "judge")

    def rank(x: tuple[int, Record]) -> tuple[bool, bool, float]:
        """Pairs that can change nothing (already in one group) last; then pairs of tickets
        that have no match yet first; then the likeliest match."""
        a, b = node(cands[x[0]])
        return (uf.find(a) == uf.find(b), a in matched and b in matched,
                -_p_match(x[1], label))

    by_pos = {i: n for n, i in enumerate(todo)}
    left = budget - spent if judge is not None else 0
    step = max(1, int(getattr(cascade, "batch_size", 8)))
    while escalated and left > 0:  # a batch at a time: each answer re-ranks the rest
        escalated.sort(key=rank)
        ask, escalated = escalated[:min(step, left)], escalated[min(step, left):]
        left -= len(ask)
        for rec in cascade.classify_iter([items[by_pos[i]] for i, _ in ask]):
            i = ask[rec.position][0]
            keep(i, rec)
            if rec.label == label:
                join(cands[i])
    for i, _ in escalated:
        keep(i, None)


def _p_match(rec: Record, label: str) -> float:
    answered = [v for v in rec.votes if v.label is not None]
    return sum(v.probs.get(label, 0.0) for v in answered) / len(answered) if answered else 0.0
