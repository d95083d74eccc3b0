"""The vote store: keys, round trips, abstentions, costs, WAL and concurrent access."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from speculabel.io.votes import VoteStore, item_key
from speculabel.records import Item, Vote
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET


def v(label: str = "positive", p: float = 0.7, lat: float = 0.25) -> Vote:
    rest = (1 - p) / 2
    probs = {x: (p if x == label else rest) for x in ("negative", "neutral", "positive")}
    return Vote("m", label, probs, latency_s=lat)


def test_item_key_depends_on_text_only() -> None:
    a = Item("1", {"text": "hello"})
    b = Item("2", {"text": "hello", "extra": "ignored"})
    c = Item("1", {"text": "hello!"})
    assert item_key(SENTIMENT, a) == item_key(SENTIMENT, b)
    assert item_key(SENTIMENT, a) != item_key(SENTIMENT, c)
    p1 = Item("x", {"text_a": "A", "text_b": "B"})
    p2 = Item("x", {"text_a": "B", "text_b": "A"})
    assert item_key(SIMILAR_TICKET, p1) != item_key(SIMILAR_TICKET, p2)  # order matters
    assert len(item_key(SENTIMENT, a)) == 32


def test_round_trip_with_costs(tmp_path: Path) -> None:
    with VoteStore(tmp_path / "v.sqlite") as s:
        s.put_many("fp", "task", [("k1", v()), ("k2", v("negative", 0.9))], cpu_s=[0.5, 0.75])
        got = s.get_many("fp", "task", ["k1", "k2", "k3"])
        assert set(got) == {"k1", "k2"}
        assert got["k2"].label == "negative"
        assert got["k2"].probs["negative"] == pytest.approx(0.9)
        assert got["k1"].latency_s == pytest.approx(0.25)
        assert all(x.cached for x in got.values())
        stored = s.get_many_stored("fp", "task", ["k2"])
        assert stored["k2"].cpu_s == pytest.approx(0.75)
        # other model or other task prompt: nothing
        assert s.get_many("fp2", "task", ["k1"]) == {}
        assert s.get_many("fp", "task2", ["k1"]) == {}
        # single get/put, one CPU time for all, renaming
        s.put("fp", "task", "k3", v("neutral"), cpu_s=0.1)
        got3 = s.get("fp", "task", "k3", model_name="alias")
        assert got3 is not None and got3.label == "neutral" and got3.model == "alias"
        assert s.count() == 3 and s.count(model_fp="fp", task_fp="task") == 3


def test_replace_and_abstentions(tmp_path: Path) -> None:
    with VoteStore(tmp_path / "v.sqlite") as s:
        s.put("fp", "t", "k", Vote.abstain("m", "timeout"))
        assert s.get("fp", "t", "k") is None  # an abstention is asked again by default
        kept = s.get("fp", "t", "k", include_abstentions=True)
        assert kept is not None and kept.label is None and kept.error == "timeout"
        s.put("fp", "t", "k", v("positive"))
        again = s.get("fp", "t", "k")
        assert again is not None and again.label == "positive"
        assert s.count() == 1


def test_persists_across_instances_and_many_keys(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "v.sqlite"
    keys = [f"k{i}" for i in range(1234)]  # more than one SQL chunk
    with VoteStore(path) as s:
        s.put_many("fp", "t", [(k, v()) for k in keys], cpu_s=0.01)
    with VoteStore(path) as s:
        assert len(s.get_many("fp", "t", keys)) == 1234


def test_wal_and_concurrent_reader(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    writer = VoteStore(path)
    assert writer.journal_mode == "wal"
    writer.put("fp", "t", "k0", v())
    # a plain reader connection can read while the writer holds an open write transaction
    writer.conn.execute("BEGIN IMMEDIATE")
    writer.conn.execute(
        "INSERT OR REPLACE INTO votes (model_fp, task_fp, item_key, model, label, probs, "
        "created) VALUES ('fp','t','k1','m','neutral','{}',0)"
    )
    reader = VoteStore(path)
    assert set(reader.get_many("fp", "t", ["k0", "k1"])) == {"k0"}  # sees the committed row
    writer.conn.execute("COMMIT")
    assert set(reader.get_many("fp", "t", ["k0", "k1"])) == {"k0", "k1"}
    reader.close()
    writer.close()
    with pytest.raises(RuntimeError):
        writer.get("fp", "t", "k0")


def test_threads_share_one_store(tmp_path: Path) -> None:
    s = VoteStore(tmp_path / "v.sqlite")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                s.put_many(f"fp{t}", "t", [(f"k{i}", v())], cpu_s=0.0)
                assert s.get(f"fp{t}", "t", f"k{i}") is not None
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert s.count() == 200
    s.close()


def test_two_processes_style_writers(tmp_path: Path) -> None:
    """Two stores on one file (as two bench processes) both write; nothing is lost."""
    path = tmp_path / "v.sqlite"
    a, b = VoteStore(path), VoteStore(path)
    a.put_many("fa", "t", [(f"k{i}", v()) for i in range(20)])
    b.put_many("fb", "t", [(f"k{i}", v()) for i in range(20)])
    assert a.count() == b.count() == 40
    a.close()
    b.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 40
    con.close()


def test_cpu_length_mismatch(tmp_path: Path) -> None:
    with VoteStore(tmp_path / "v.sqlite") as s, pytest.raises(ValueError):
        s.put_many("fp", "t", [("k", v())], cpu_s=[0.1, 0.2])


def test_used_by_the_cascade(tmp_path: Path) -> None:
    """The cascade's CachedBackend reads and writes through this store."""
    from collections.abc import Sequence

    from speculabel.backends.base import FunctionBackend
    from speculabel.cascade.run import Cascade
    from speculabel.policy import Majority
    from speculabel.tasks import Task

    calls = {"n": 0}

    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        calls["n"] += len(items)
        return [{"positive": 0.8, "neutral": 0.1, "negative": 0.1} for _ in items]

    items = [Item(str(i), {"text": f"t{i}"}) for i in range(5)]
    with VoteStore(tmp_path / "v.sqlite") as s:
        for _ in range(2):
            c = Cascade(SENTIMENT, [FunctionBackend("a", fn), FunctionBackend("b", fn)], None,
                        Majority(), vote_store=s, parallel_workers=False)
            recs = c.classify(items)
            assert all(r.label == "positive" for r in recs)
        assert calls["n"] == 10  # the second run read every vote from the store
