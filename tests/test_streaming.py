"""classify streams: memory does not follow the input's length, and the streamed input gives
exactly the entries (and ids) that reading the whole table gives."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

import needs
from speculabel import Cascade, FunctionBackend, make_policy
from speculabel.cascade.config import make_config
from speculabel.io.idset import IdSet, id_key
from speculabel.io.scan import TableScan
from speculabel.io.tables import read_items
from speculabel.records import Item
from speculabel.tasks import SENTIMENT, Task


def _judge(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
    return [{"positive": 0.8, "negative": 0.1, "neutral": 0.1} for _ in items]


def _write_jsonl(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"t{i}", "text": f"tweet number {i} is fine"}) + "\n")


def _peak_run(tmp: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """tracemalloc's peak (bytes) over a whole FileRun of n rows, a cheap judge in-process."""
    import speculabel.cascade.build as build
    from speculabel.runs import FileRun

    def cheap(cfg: object, **kw: object) -> Cascade:
        return Cascade(SENTIMENT, [], FunctionBackend("cheap", _judge), make_policy("majority"),
                       batch_size=256)

    monkeypatch.setattr(build, "build_cascade", cheap)
    inp, out = tmp / f"in{n}.jsonl", tmp / f"out{n}.jsonl"
    _write_jsonl(inp, n)
    cfg = make_config({"task": "sentiment", "judge_only": True, "judge": "vader",
                       "batch_size": 256})
    tracemalloc.start()
    try:
        run = FileRun(inp, out, cfg, id_column="id")
        count = sum(1 for _ in run.records())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == n and run.saved == n
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"t{i}" for i in range(n)]  # every row once, in input order
    return peak


def test_classify_memory_does_not_follow_rows(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Six times the rows: the peak grows by the scan's 8-byte id keys only (freed before the
    run), nothing a record; holding the ids (a Python set: 100+ bytes an id) or the rows and
    records (1,280 bytes a row before streaming) fails this."""
    _peak_run(tmp_path, 300, monkeypatch)  # the modules a run imports, out of the peaks
    small, large = 1_000, 6_000
    grow = _peak_run(tmp_path, large, monkeypatch) - _peak_run(tmp_path, small, monkeypatch)
    per_row = grow / (large - small)
    assert per_row < 40, f"peak memory grows {per_row:.0f} bytes a row"


def _tricky(path: Path) -> None:
    rows = [
        {"id": "a", "text": "fine"},
        {"id": "3", "text": "the id of row 3's own number"},
        {"id": "a", "text": "a duplicate of row 1"},
        {"id": "", "text": "an empty id"},
        {"id": "b", "text": ""},
        {"id": "row-6", "text": "takes the id row 6 would get"},
        {"id": "6", "text": 5},
        {"id": "c", "text": "fine"},
        {"id": "c", "text": "again"},
    ]
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        fh.write("{not json\n")
        fh.write(json.dumps({"id": "d", "text": "last"}) + "\n")


@pytest.mark.parametrize("limit", [None, 4, 9, 0])
def test_scan_gives_the_entries_of_read_items(tmp_path: Path, limit: int | None) -> None:
    """Duplicates, empty ids, bad rows, ids a bad row's number would take: the streamed
    entries are those of the whole-table reader, ids included, and a limit cuts both alike."""
    p = tmp_path / "t.jsonl"
    _tricky(p)
    whole = list(read_items(p, SENTIMENT, id_column="id"))
    scan = TableScan(p, SENTIMENT, id_column="id", limit=limit)
    want = whole if limit is None else whole[:limit]
    assert list(scan.entries()) == want
    assert scan.n_rows == len(want)
    ids = [e.id for e in whole]
    assert len(set(ids)) == len(ids)  # every entry has its own id


@pytest.mark.parametrize("first", [0, 5, 11])
def test_count_done_against_results(tmp_path: Path, first: int) -> None:
    """What is left to do, counted from the scan's keys: items and bad rows (a duplicate is a
    bad row) apart."""
    p = tmp_path / "t.jsonl"
    _tricky(p)
    whole = list(read_items(p, SENTIMENT, id_column="id"))
    done = IdSet()
    for e in whole[:first]:
        done.add(str(e.id))
    skipped, items, bad = TableScan(p, SENTIMENT, id_column="id").count_done(done)
    left = whole[first:]
    assert skipped == first
    assert items == sum(isinstance(e, Item) for e in left)
    assert bad == len(left) - items


def test_idset_merges_and_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import speculabel.io.idset as idset

    monkeypatch.setattr(idset, "MERGE_AT", 7)
    s = IdSet()
    for i in range(50):
        s.add(f"x{i}")
    s.add("x3")  # again: still one
    assert len(s) == 50 and "x49" in s and "x50" not in s and 3 not in s
    keys = np.array([id_key("x0"), id_key("y"), id_key("x20")], dtype="S16")
    assert s.contains_keys(keys).tolist() == [True, False, True]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_table_written_from_the_journal_in_groups(tmp_path: Path, suffix: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is written from the journal a group of rows at a time, every record in
    order, and a resumed file keeps them (the journal read back a line at a time)."""
    import csv

    import speculabel.io.export as export
    from speculabel.io.results import ResultsFile
    from speculabel.records import Record

    if suffix == ".parquet":
        needs.module("pyarrow", needs.PARQUET)
    monkeypatch.setattr(export, "GROUP", 2)
    out = tmp_path / f"out{suffix}"
    with ResultsFile(out, fsync=False) as rf:
        for i in range(5):
            rf.write(Record(f"r{i}", "positive", "judge"), sync=False)
    with ResultsFile(out) as rf:
        assert len(rf.ids) == 5 and "r4" in rf and "r5" not in rf
        rf.write(Record("r5", "negative", "workers"))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        ids = pq.read_table(out).column("id").to_pylist()
    else:
        ids = [r["id"] for r in csv.DictReader(out.open(encoding="utf-8"))]
    assert ids == [f"r{i}" for i in range(6)]


def test_memory_bench_checks_and_table(tmp_path: Path) -> None:
    """The bench's own checks: every id once (a missing or repeated id is an error), and the
    growth per 100k rows from the smallest run."""
    from speculabel.bench.memory import check_output, format_table, slopes

    out = tmp_path / "o.jsonl"
    out.write_text("".join(json.dumps({"id": f"t{i}"}) + "\n" for i in range(3)))
    assert check_output(out, 3) == 3
    with pytest.raises(ValueError, match="ids missing"):
        check_output(out, 4)
    out.write_text("".join(json.dumps({"id": i}) + "\n" for i in ["t0", "t1", "t1"]))
    with pytest.raises(ValueError, match="twice"):
        check_output(out, 3)
    runs = [{"rows": 100_000, "seconds": 1.0, "peak_rss_mb": 60.0},
            {"rows": 1_000_000, "seconds": 9.0, "peak_rss_mb": 87.0}]
    slopes(runs)
    assert runs[0]["mb_per_100k_rows"] is None and runs[1]["mb_per_100k_rows"] == 3.0
    assert "1,000,000" in format_table({"runs": runs})


def test_latencies_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact while few (numpy's percentile), then a histogram: the mean stays exact and the
    95th percentile within a bin (about 1.1 %) of the exact one."""
    import numpy as np

    import speculabel.cascade.latency as latency

    xs = np.random.default_rng(0).lognormal(-5, 1, 5000)
    few = latency.Latencies()
    few.extend(xs[:100])
    assert few.percentile(95) == pytest.approx(float(np.percentile(xs[:100], 95)))
    monkeypatch.setattr(latency, "EXACT", 1000)
    many = latency.Latencies()
    many.extend(xs)
    assert list(many) == [] and len(many) == 5000  # no value kept one by one
    assert many.mean() == pytest.approx(float(xs.mean()))
    assert many.percentile(95) == pytest.approx(float(np.percentile(xs, 95)), rel=0.012)
    assert latency.Latencies().percentile(95) == 0.0
