"""Results as the table their name asks for: ``-o out.parquet``, ``-o out.csv``, ``-o out.tsv``.

Why a journal: a Parquet file cannot be appended to, and a CSV row cannot hold a record's votes
without flattening them, so the run writes its records to a JSON Lines journal beside the table
(``OUT.journal.jsonl``, resumable like any results file) and the table is written from it,
atomically and streaming (a row group at a time), whenever a run ends (finished, interrupted or
failed).  The table has one row per record: the record's scalar fields as columns, ``votes``
and ``judge_vote`` as JSON text.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from speculabel.io.runmeta import ResultsError, fsync_dir

#: name suffix -> table format ("jsonl": the records themselves)
WRITERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".csv": "csv",
           ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
#: suffixes of formats it cannot write (any other name is written as JSON Lines)
REFUSED = (".json", ".xlsx", ".xls", ".feather", ".arrow", ".orc", ".avro", ".h5", ".hdf5",
           ".pkl", ".pickle", ".gz", ".bz2", ".xz", ".zst", ".zip", ".db", ".sqlite")
COLUMNS = ["id", "label", "decided_by", "rule", "error", "error_kind", "row", "truncated",
           "latency_s", "run", "votes", "judge_vote"]
#: rows per Parquet row group (and records held at once while a table is written)
GROUP = 10_000


def output_format(path: Path) -> str:
    """The table format ``path``'s name asks for; refused (naming what works) when it cannot be
    written, before anything is loaded."""
    suffix = path.suffix.lower()
    if suffix in WRITERS:
        fmt = WRITERS[suffix]
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ResultsError(
                    f"cannot write {path}: Parquet needs pyarrow (pip install "
                    "'speculabel[parquet]'); or write .jsonl or .csv") from None
        return fmt
    if suffix in REFUSED:
        raise ResultsError(f"cannot write {path}: results are written as .jsonl (JSON Lines), "
                           ".csv, .tsv or .parquet; give -o one of those")
    return "jsonl"


def journal_path(path: Path, fmt: str) -> Path:
    """Where the records are appended: the output itself for JSON Lines, else beside it."""
    return path if fmt == "jsonl" else path.with_name(path.name + ".journal.jsonl")


def row(r: dict[str, Any]) -> dict[str, Any]:
    """One record as a flat row (nested fields as JSON text)."""
    out = {k: r.get(k) for k in COLUMNS}
    out["votes"] = json.dumps(r.get("votes") or [], ensure_ascii=False)
    jv = r.get("judge_vote")
    out["judge_vote"] = None if jv is None else json.dumps(jv, ensure_ascii=False)
    return out


def rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per record (nested fields as JSON text)."""
    return [row(r) for r in records]


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file that replaces ``path`` (fsynced, renamed) when the block ends well;
    removed when it does not: ``path`` holds the old table or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_table(path: Path, fmt: str, records: Iterable[dict[str, Any]]) -> None:
    """Write the table atomically, streaming: the records are read once, a row group
    (:data:`GROUP` rows) at a time, so a table of any length is written in bounded memory."""
    if fmt in ("csv", "tsv"):
        with _replacing(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, delimiter="," if fmt == "csv" else "\t",
                               lineterminator="\n")
            w.writeheader()
            for r in records:
                w.writerow(row(r))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("label", pa.string()),
                            ("decided_by", pa.string()), ("rule", pa.string()),
                            ("error", pa.string()), ("error_kind", pa.string()),
                            ("row", pa.int64()), ("truncated", pa.bool_()),
                            ("latency_s", pa.float64()), ("run", pa.string()),
                            ("votes", pa.string()), ("judge_vote", pa.string())])
        with _replacing(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
            group: list[dict[str, Any]] = []
            wrote = False
            for r in records:
                group.append(row(r))
                if len(group) >= GROUP:
                    writer.write_table(pa.Table.from_pylist(group, schema=schema))
                    group, wrote = [], True
            if group or not wrote:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
    else:
        raise ValueError(f"no table format {fmt!r}")
