"""Input tables and the results file: bad rows, resume, and nothing lost or mixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import needs
from speculabel.io.results import ResultsError, ResultsFile, RunInfo
from speculabel.io.tables import InputError, RowError, read_items, read_labelled
from speculabel.records import Item, Record, Vote
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET


def _records(path: Path) -> list[dict]:
    return [d for d in map(json.loads, path.read_text().splitlines()) if "speculabel" not in d]


def test_csv_rows_and_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("id,review\na,good\nb,\nc,bad\na,dup\n")
    rows = list(read_items(p, SENTIMENT, columns={"text": "review"}, id_column="id"))
    assert isinstance(rows[0], Item) and rows[0].fields == {"text": "good"} and rows[0].row == 1
    assert isinstance(rows[1], RowError) and "row 2" in rows[1].error and "empty text" in rows[1].error
    assert isinstance(rows[2], Item)
    assert isinstance(rows[3], RowError) and "duplicate id 'a' (first in row 1)" in rows[3].error
    assert rows[3].row == 4 and rows[3].id == "4"  # its row number, never the first row's id
    assert rows[1].id == "b"  # a row with a valid id of its own keeps it


def test_tsv_is_read_like_csv(tmp_path: Path) -> None:
    p = tmp_path / "in.tsv"
    p.write_text("id\ttext\nx\tgreat, really\ny\tawful\n")
    rows = list(read_items(p, SENTIMENT, id_column="id"))
    assert [(r.id, r.fields["text"]) for r in rows if isinstance(r, Item)] == [
        ("x", "great, really"), ("y", "awful")]


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
    assert [r.row for r in rows] == [1, 2, 3]
    assert [r.id for r in rows if isinstance(r, Item)] == ["1", "3"]
    assert isinstance(rows[1], RowError) and "line 2" in rows[1].error and rows[1].id == "2"


def test_parquet(tmp_path: Path) -> None:
    pa = needs.module("pyarrow", needs.PARQUET)
    import pyarrow.parquet as pq

    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "k": [1, 2]}), p)
    rows = list(read_items(p, SENTIMENT, id_column="k"))
    assert [r.id for r in rows] == ["1", "2"]


def test_labelled_reads_gold_in_one_pass(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("text,gold\ngood,positive\n,negative\nbad,\n")
    items, gold, bad = read_labelled(p, SENTIMENT, "gold")
    assert [it.fields["text"] for it in items] == ["good", "bad"]
    assert gold == ["positive", None]
    assert [b.row for b in bad] == [2]
    p.write_text("text,gold\ngood,pos\n")
    with pytest.raises(InputError, match=r"label\(s\) \['pos'\]"):
        read_labelled(p, SENTIMENT, "gold")


# ------------------------------------------------------------------ rows that lose text


def test_extra_and_missing_fields_are_bad_rows(tmp_path: Path) -> None:
    # before: "Great product" was classified, the rest of the review silently dropped
    p = tmp_path / "in.csv"
    p.write_text("id,text\n1,Great product, but it broke after a day\n2\n3,fine\n")
    rows = list(read_items(p, SENTIMENT, id_column="id"))
    assert isinstance(rows[0], RowError) and "has 3 fields, the header has 2" in rows[0].error
    assert "unquoted delimiter" in rows[0].error
    assert isinstance(rows[1], RowError) and "has 1 fields, the header has 2" in rows[1].error
    assert isinstance(rows[2], Item) and rows[2].fields == {"text": "fine"}


def test_bytes_that_are_not_utf8_are_bad_rows_not_a_crash(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_bytes(b"text\nok\ncaf\xe9 latin-1\nfine\n")
    rows = list(read_items(p, SENTIMENT))
    assert [type(r).__name__ for r in rows] == ["Item", "RowError", "Item"]
    assert "not UTF-8" in rows[1].error and "row 2" in rows[1].error
    j = tmp_path / "in.jsonl"
    j.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    rows = list(read_items(j, SENTIMENT))
    assert isinstance(rows[1], RowError) and "line 2 is not UTF-8" in rows[1].error


@pytest.mark.parametrize(("name", "data", "phrase"), [
    ("bin.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "header"),
    ("bin.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
    ("array.json", b'[{"text": "a"}]\n', "JSON array"),
    ("bad.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
    ("empty.csv", b"", "is empty"),
    ("header.csv", b"text\n", "no data rows"),
])
def test_unreadable_files_are_refused_with_the_reason(
    tmp_path: Path, name: str, data: bytes, phrase: str
) -> None:
    if name.endswith(".parquet"):
        needs.module("pyarrow", needs.PARQUET)
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(InputError, match=phrase) as e:
        list(read_items(p, SENTIMENT))
    assert str(p) in str(e.value)


# ------------------------------------------------------------------ the results file


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
    assert [r["id"] for r in _records(out)] == ["1", "2", "3"]
    assert all("speculabel" not in json.loads(x) for x in out.read_text().splitlines())
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["speculabel"] == "results"
    with pytest.raises(ValueError, match="already written"):
        ResultsFile(out).write(Record("3", "neutral", "judge"))


@pytest.mark.parametrize("content", [
    "id,text\n1,good\n2,bad",  # a CSV whose last line has no newline
    '{"id": "1", "text": "x"}\n{"id": "2", "text": "y"}',  # an input JSONL
    '{"something": 1}\n',
])
def test_a_foreign_file_is_refused_and_left_byte_for_byte(tmp_path: Path, content: str) -> None:
    # before: the "torn line" repair cut the victim's last line before the check
    out = tmp_path / "victim.txt"
    out.write_text(content)
    with pytest.raises(ResultsError, match=r"not a speculabel results file.*untouched"):
        ResultsFile(out)
    assert out.read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]  # no sidecar, no lock


def test_output_paths_that_cannot_work(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ResultsError, match="is a directory"):
        ResultsFile(tmp_path / "d")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ResultsError, match="is a file, not a directory"):
        ResultsFile(tmp_path / "f" / "out.jsonl")


def test_another_run_is_refused_naming_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    a = RunInfo({"task": "sentiment", "judge": "j1"}, {"path": "/in.csv"})
    with ResultsFile(out, a) as rf:
        rf.write(Record("1", "positive", "workers"))
    b = RunInfo({"task": "similar-ticket", "judge": "j1"}, {"path": "/in.csv"})
    with pytest.raises(ResultsError, match="task: then 'sentiment', now 'similar-ticket'"):
        ResultsFile(out, b)
    c = RunInfo({"task": "sentiment", "judge": "j1"}, {"path": "/other.csv"})
    with pytest.raises(ResultsError, match=r"input path: then '/in\.csv', now '/other\.csv'"):
        ResultsFile(out, c)
    with ResultsFile(out, a) as rf:  # the same run resumes
        assert "1" in rf
        rf.write(Record("2", "negative", "judge"))
    with ResultsFile(out, b, allow_changed_run=True) as rf:  # explicitly allowed
        rf.write(Record("3", "similar", "judge"))
    recs = _records(out)
    assert [r["run"] for r in recs] == [a.fingerprint, a.fingerprint, b.fingerprint]
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert [r["run"] for r in meta["runs"]] == [a.fingerprint, b.fingerprint]
    assert meta["runs"][0]["settings"] == a.settings and meta["runs"][0]["input"] == a.input


def test_bad_rows_are_keyed_by_row_and_never_collide_with_ids(tmp_path: Path) -> None:
    # before: the made-up id "2" of a broken line 2 collided with the real id "2" of row 3
    p = tmp_path / "in.jsonl"
    p.write_text('{"id": "1", "text": "a"}\nbroken\n{"id": "2", "text": "b"}\n')
    rows = list(read_items(p, SENTIMENT, id_column="id"))
    out = tmp_path / "out.jsonl"
    with ResultsFile(out) as rf:
        for r in rows:
            if isinstance(r, RowError):
                rf.write_bad_row(r)
            else:
                rf.write(Record(r.id, "positive", "workers", row=r.row))
    rf2 = ResultsFile(out)
    assert all(rf2.is_done(r) for r in rows)
    bad = [r for r in _records(out) if r["error"]]
    # its row number "2" is a real id already: the bad row's record gets one no row has
    assert bad == [{**bad[0], "id": "row-2", "row": 2, "error_kind": "input"}]


def test_retryable_error_records_are_decided_again(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with ResultsFile(out) as rf:
        rf.write(Record("1", "positive", "workers"))
        rf.write(Record("2", None, None, error="escalated, but the cascade has no judge",
                        error_kind="no_judge"))
        rf.write(Record("3", None, None, error="judge abstained: too long", error_kind="judge"))
    rf2 = ResultsFile(out)
    assert rf2.dropped_retryable == 1
    assert set(rf2.done) == {"1", "3"}  # a judge that could not label the item is final
    rf2.write(Record("2", "negative", "judge"))
    rf2.close()
    assert sorted(r["id"] for r in _records(out)) == ["1", "2", "3"]
