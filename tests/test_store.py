from __future__ import annotations

import json
from pathlib import Path

import pytest

from speculabel.records import Item, Record, Vote
from speculabel.store import InputError, ResultsFile, RowError, read_items
from speculabel.task import SENTIMENT, SIMILAR_TICKET


def test_csv_rows_and_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("id,review\na,good\nb,\nc,bad\na,dup\n")
    rows = list(read_items(p, SENTIMENT, columns={"text": "review"}, id_column="id"))
    assert isinstance(rows[0], Item) and rows[0].fields == {"text": "good"}
    assert isinstance(rows[1], RowError) and "row 2" in rows[1].error and "empty text" in rows[1].error
    assert isinstance(rows[2], Item)
    assert isinstance(rows[3], RowError) and "duplicate id" in rows[3].error


def test_unknown_column_lists_columns(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("id,review\na,good\n")
    with pytest.raises(InputError, match=r"unknown column\(s\) 'text'.*the file has: id, review"):
        list(read_items(p, SENTIMENT))


def test_missing_file() -> None:
    with pytest.raises(InputError, match=r"not found: nowhere\.csv"):
        list(read_items("nowhere.csv", SENTIMENT))


def test_jsonl_pairs_and_row_numbers(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_text(
        json.dumps({"text_a": "x", "text_b": "y"}) + "\nnot json\n"
        + json.dumps({"text_a": "x", "text_b": "z"}) + "\n"
    )
    rows = list(read_items(p, SIMILAR_TICKET))
    assert [r.id for r in rows] == ["1", "2", "3"]
    assert isinstance(rows[1], RowError) and "line 2" in rows[1].error


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (extra 'parquet')")
    import pyarrow.parquet as pq

    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "k": [1, 2]}), p)
    rows = list(read_items(p, SENTIMENT, id_column="k"))
    assert [r.id for r in rows] == ["1", "2"]


def test_results_resume_after_torn_write(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with ResultsFile(out) as rf:
        rf.write(Record("1", "positive", "workers", [Vote.from_probs("m", {"positive": 1.0})]))
        rf.write(Record("2", "negative", "judge"))
    # simulate kill -9 in the middle of writing record 3
    with out.open("a") as fh:
        fh.write('{"id": "3", "label": "pos')
    rf2 = ResultsFile(out)
    assert set(rf2.done) == {"1", "2"}
    assert out.read_text().endswith("\n")
    rf2.write(Record("3", "neutral", "judge"))
    rf2.close()
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["1", "2", "3"]
    with pytest.raises(ValueError, match="already written"):
        ResultsFile(out).write(Record("3", "neutral", "judge"))


def test_results_file_refuses_foreign_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"something": 1}\n')
    with pytest.raises(InputError, match="not a speculabel record"):
        ResultsFile(out)
