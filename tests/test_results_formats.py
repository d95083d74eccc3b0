"""The results file as every tool reads it: records only (settings in ``OUT.meta.json``), the
format-1 files with a header line still resumed, and ``-o x.parquet`` / ``x.csv`` written as the
name says, resumably."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import needs
from speculabel.io.results import ResultsError, ResultsFile, RunInfo
from speculabel.records import Record, Vote

pytest_plugins = ["fake_openai"]
TEST = "pip install 'speculabel[test]'"

RUN = RunInfo({"task": "sentiment", "judge": "j1"}, {"path": "/in.csv"})
OTHER = RunInfo({"task": "sentiment", "judge": "j2"}, {"path": "/in.csv"})


def _write(out: Path, ids: list[str], run: RunInfo = RUN) -> None:
    with ResultsFile(out, run) as rf:
        for i in ids:
            rf.write(Record(i, "positive", "workers",
                            [Vote.from_probs("vader", {"positive": 0.9, "negative": 0.1})],
                            row=int(i)))


def test_results_are_records_only_and_pandas_reads_them(tmp_path: Path) -> None:
    pd = needs.module("pandas", TEST)
    out = tmp_path / "out.jsonl"
    _write(out, ["1", "2"])
    with ResultsFile(out, RUN) as rf:  # a resumed run appends below, still records only
        rf.write(Record("3", None, None, error="row 3: empty text", error_kind="input", row=3))
    df = pd.read_json(out, lines=True, dtype={"id": str})
    assert list(df["id"]) == ["1", "2", "3"] and len(df) == 3
    assert set(df["run"]) == {RUN.fingerprint}
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["format"] == 2 and [r["run"] for r in meta["runs"]] == [RUN.fingerprint]
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("reader", ["polars", "duckdb"])
def test_other_tools_read_the_results_as_they_are(tmp_path: Path, reader: str) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, ["1", "2", "3"])
    if reader == "polars":
        pl = needs.module("polars", TEST)
        ids = pl.read_ndjson(out)["id"].to_list()
    else:
        duckdb = needs.module("duckdb", TEST)
        ids = [r[0] for r in duckdb.sql(f"SELECT id FROM read_json_auto('{out}')").fetchall()]
    assert [str(i) for i in ids] == ["1", "2", "3"]


def _legacy(out: Path, run: RunInfo, ids: list[str], torn: bool = False) -> bytes:
    """A format-1 file: a header line, then records (what earlier versions wrote)."""
    lines = [json.dumps(run.header())]
    lines += [json.dumps({**Record(i, "negative", "judge").to_json(), "run": run.fingerprint})
              for i in ids]
    data = ("\n".join(lines) + "\n" + ('{"id": "9", "lab' if torn else "")).encode()
    out.write_bytes(data)
    return data


def test_a_format_1_file_resumes_and_is_migrated(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _legacy(out, RUN, ["1", "2"], torn=True)
    with ResultsFile(out, RUN) as rf:
        assert set(rf.done) == {"1", "2"}
        rf.write(Record("3", "positive", "judge"))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [d["id"] for d in lines] == ["1", "2", "3"]  # the header moved out, the torn line cut
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["runs"] == [RUN.to_json()]
    with ResultsFile(out, RUN) as rf:  # and it goes on resuming from the sidecar
        assert set(rf.done) == {"1", "2", "3"}


def test_a_format_1_file_of_other_settings_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    data = _legacy(out, RUN, ["1", "2"])
    with pytest.raises(ResultsError, match="judge: then 'j1', now 'j2'"):
        ResultsFile(out, OTHER)
    assert out.read_bytes() == data and not (tmp_path / "out.jsonl.meta.json").exists()


def test_settings_that_differ_are_named_from_the_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, ["1"])
    before = out.read_bytes()
    with pytest.raises(ResultsError, match=r"judge: then 'j1', now 'j2'.*--allow-changed-run"):
        ResultsFile(out, OTHER)
    assert out.read_bytes() == before


def test_records_without_their_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, ["1", "2"])
    (tmp_path / "out.jsonl.meta.json").unlink()
    with pytest.raises(ResultsError, match=f"made by run {RUN.fingerprint}.*missing"):
        ResultsFile(out, OTHER)  # the records name their run: another one is refused
    with ResultsFile(out, RUN) as rf:  # the same run resumes and writes its sidecar again
        assert set(rf.done) == {"1", "2"}
        rf.write(Record("3", "positive", "judge"))
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["runs"] == [RUN.to_json()]


@pytest.mark.parametrize("content", ['{"id": "1", "text": "an input line"}\n', "a,b\n1,2\n"])
def test_a_file_that_is_not_ours_is_refused_untouched(tmp_path: Path, content: str) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(content)
    with pytest.raises(ResultsError, match="not a speculabel results file"):
        ResultsFile(out, RUN)
    assert out.read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_nothing_is_created_until_the_first_record(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.jsonl"
    ResultsFile(out, RUN).close()
    assert list((tmp_path / "sub").iterdir()) == []  # no 0-byte results, no sidecar, no lock


# ------------------------------------------------------------------ tables


def test_parquet_output_is_parquet_and_resumes(tmp_path: Path) -> None:
    pd = needs.module("pandas", TEST)
    needs.module("pyarrow", needs.PARQUET)
    out = tmp_path / "out.parquet"
    _write(out, ["1", "2"])
    df = pd.read_parquet(out)
    assert list(df["id"]) == ["1", "2"] and list(df["label"]) == ["positive", "positive"]
    assert json.loads(df["votes"][0])[0]["model"] == "vader"
    with ResultsFile(out, RUN) as rf:  # resumed from the journal beside it
        assert set(rf.done) == {"1", "2"}
        rf.write(Record("3", "negative", "judge"))
    assert list(pd.read_parquet(out)["id"]) == ["1", "2", "3"]
    assert (tmp_path / "out.parquet.journal.jsonl").exists()


@pytest.mark.parametrize("name,sep", [("out.csv", ","), ("out.tsv", "\t")])
def test_csv_output_is_csv(tmp_path: Path, name: str, sep: str) -> None:
    pd = needs.module("pandas", TEST)
    out = tmp_path / name
    _write(out, ["1", "2", "3"])
    df = pd.read_csv(out, sep=sep, dtype={"id": str})
    assert list(df["id"]) == ["1", "2", "3"] and set(df["decided_by"]) == {"workers"}


def test_a_foreign_table_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("name,age\nann,31\n")
    with pytest.raises(ResultsError, match="not a speculabel results file"):
        ResultsFile(out, RUN)
    assert out.read_text() == "name,age\nann,31\n"


@pytest.mark.parametrize("name", ["out.xlsx", "out.json", "out.jsonl.gz"])
def test_a_format_it_cannot_write_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ResultsError, match=r"\.jsonl \(JSON Lines\), \.csv, \.tsv or \.parquet"):
        ResultsFile(tmp_path / name, RUN)
    assert list(tmp_path.iterdir()) == []


def test_the_table_is_written_when_a_run_is_interrupted(tmp_path: Path) -> None:
    pd = needs.module("pandas", TEST)
    out = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt), ResultsFile(out, RUN) as rf:
        rf.write(Record("1", "positive", "workers"))
        raise KeyboardInterrupt
    assert list(pd.read_csv(out, dtype={"id": str})["id"]) == ["1"]


def test_a_failed_write_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from speculabel.io.results import ResultsWriteError

    out = tmp_path / "out.jsonl"
    rf = ResultsFile(out, RUN)
    rf.write(Record("1", "positive", "workers"))
    real = os.write

    def half(fd: int, data: bytes) -> int:  # the disk fills in the middle of a line
        if len(data) > 20:
            real(fd, bytes(data[:20]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(ResultsWriteError, match=r"the disk is full; 1 records are saved.*rerun"):
        rf.write(Record("2", "negative", "judge"))
    monkeypatch.undo()
    rf.close()
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["1"]


# ------------------------------------------------------------------ from the command line


@pytest.mark.parametrize("name", ["out.parquet", "out.csv"])
def test_classify_writes_the_table_its_name_asks_for(tmp_path: Path, fake: Any,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     name: str) -> None:
    pd = needs.module("pandas", TEST)
    if name.endswith(".parquet"):
        needs.module("pyarrow", needs.PARQUET)
    from typer.testing import CliRunner

    from speculabel.cli import app

    _, url = fake
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path / "home"))
    inp = tmp_path / "in.csv"
    inp.write_text("id,text\n1,I love it\n2,awful\n3,\n4,the bus\n")  # 3: empty text
    out = tmp_path / name
    args = ["classify", str(inp), "-o", str(out), "--task", "sentiment", "--id-column", "id",
            f"--workers=vader,openai:m2@{url}", f"--judge=openai:m1@{url}", "-q"]
    res = CliRunner().invoke(app, [*args, "--limit", "2"])
    assert res.exit_code == 0, res.output

    def read(p: Path) -> Any:
        return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype={"id": str})

    assert [str(i) for i in read(out)["id"]] == ["1", "2"]
    res = CliRunner().invoke(app, args)  # resumed: the table grows to every row, once each
    assert res.exit_code == 0, res.output
    df = read(out)
    assert sorted(str(i) for i in df["id"]) == ["1", "2", "3", "4"] and len(df) == 4
    assert df.loc[df["id"].astype(str) == "3", "error_kind"].tolist() == ["input"]
