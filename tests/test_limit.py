"""The hardware limit beside computed and measured speedups: its arithmetic, and each embedder
timed once however many workers share it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from speculabel import FunctionBackend
from speculabel.bench.limit import config_limit, distinct_texts, hardware_limit, time_embedders
from speculabel.records import Item
from speculabel.tasks import Task


def test_limit_arithmetic() -> None:
    """Judge alone 100 s over 1,000 items: 0.1 s a call; 50 calls + 3 s embedding + 2 s of a
    lexicon = 10 s, a 10x limit; a cascade measured at 15 s is 1.5x the limit."""
    lim = hardware_limit(judge_wall_s=100.0, n_items=1000, judge_calls=50, embed_s=3.0,
                         workers_s=2.0, cascade_wall_s=15.0)
    assert lim["judge_marginal_s"] == pytest.approx(0.1)
    assert lim["judge_s"] == pytest.approx(5.0)
    assert lim["wall_s"] == pytest.approx(10.0)
    assert lim["speedup"] == pytest.approx(10.0)
    assert lim["measured_over_limit"] == pytest.approx(1.5)
    free = hardware_limit(judge_wall_s=1.0, n_items=10, judge_calls=0, embed_s=0.0)
    assert math.isinf(free["speedup"]) and math.isnan(free["measured_over_limit"])
    assert math.isnan(hardware_limit(judge_wall_s=1.0, n_items=0, judge_calls=0,
                                     embed_s=1.0)["speedup"])


class Embedder:
    """An embedding function that counts what it is given and can forget."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.forgot = 0

    def __call__(self, texts: Sequence[str]) -> Any:
        self.calls.append(len(texts))
        return [[0.0] for _ in texts]

    def forget(self) -> None:
        self.forgot += 1


def _worker(name: str, emb: Embedder | None) -> FunctionBackend:
    def score(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        return [{"positive": 1.0} for _ in items]

    b = FunctionBackend(name, score)
    if emb is not None:
        b._embed = emb  # type: ignore[attr-defined]  # as a learning worker holds it
    return b


def test_shared_embedder_timed_once_on_distinct_texts() -> None:
    shared, other = Embedder(), Embedder()
    learner, similar = _worker("learner", shared), _worker("similar", shared)
    lex, third = _worker("lexicon", None), _worker("third", other)
    items = [Item("1", {"text_a": "a", "text_b": "b"}), Item("2", {"text_a": "a", "text_b": "c"})]
    assert distinct_texts(items) == ["a", "b", "c"]
    ticks = iter([0.0, 2.0, 10.0, 10.5])
    times = time_embedders([learner, similar, lex, third], items, clock=lambda: next(ticks))
    assert shared.calls == [3] and other.calls == [3]  # one call each, every text once
    assert shared.forgot == 2  # cold before, and left cold for the timings after
    assert times == {id(shared): 2.0, id(other): 0.5}
    loaded = {"learner": learner, "similar": similar, "lexicon": lex}
    lim = config_limit(["learner", "similar", "lexicon"], loaded, times,
                       lambda w: [0.25, 0.25], judge_wall_s=4.0, n_items=2, judge_calls=1,
                       cascade_wall_s=6.0)
    # the shared embedder once (2 s), the lexicon at its stored cost (0.5 s), one call at 2 s
    assert lim["embed_s"] == 2.0 and lim["workers_s"] == 0.5 and lim["judge_s"] == 2.0
    assert lim["wall_s"] == 4.5 and lim["measured_over_limit"] == pytest.approx(6.0 / 4.5)
