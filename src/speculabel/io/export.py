"""Results as the table their name asks for: ``-o out.parquet``, ``-o out.csv``, ``-o out.tsv``.

Why a journal: a Parquet file cannot be appended to, and a CSV row cannot hold a record's votes
without flattening them, so the run writes its records to a JSON Lines journal beside the table
(``OUT.journal.jsonl``, resumable like any results file) and the table is written from it,
atomically, whenever a run ends (finished, interrupted or failed).  The table has one row per
record: the record's scalar fields as columns, ``votes`` and ``judge_vote`` as JSON text.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from speculabel.io.runmeta import ResultsError, atomic_write

#: name suffix -> table format ("jsonl": the records themselves)
WRITERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".csv": "csv",
           ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
#: suffixes of formats it cannot write (any other name is written as JSON Lines)
REFUSED = (".json", ".xlsx", ".xls", ".feather", ".arrow", ".orc", ".avro", ".h5", ".hdf5",
           ".pkl", ".pickle", ".gz", ".bz2", ".xz", ".zst", ".zip", ".db", ".sqlite")
COLUMNS = ["id", "label", "decided_by", "rule", "error", "error_kind", "row", "truncated",
           "latency_s", "run", "votes", "judge_vote"]


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


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per record (nested fields as JSON text)."""
    out = []
    for r in records:
        row = {k: r.get(k) for k in COLUMNS}
        row["votes"] = json.dumps(r.get("votes") or [], ensure_ascii=False)
        jv = r.get("judge_vote")
        row["judge_vote"] = None if jv is None else json.dumps(jv, ensure_ascii=False)
        out.append(row)
    return out


def write_table(path: Path, fmt: str, records: list[dict[str, Any]]) -> None:
    """Write the table atomically (it holds the old table or the new one, never a mix)."""
    table = rows(records)
    if fmt in ("csv", "tsv"):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="," if fmt == "csv" else "\t",
                           lineterminator="\n")
        w.writeheader()
        w.writerows(table)
        atomic_write(path, buf.getvalue().encode("utf-8"))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("label", pa.string()),
                            ("decided_by", pa.string()), ("rule", pa.string()),
                            ("error", pa.string()), ("error_kind", pa.string()),
                            ("row", pa.int64()), ("truncated", pa.bool_()),
                            ("latency_s", pa.float64()), ("run", pa.string()),
                            ("votes", pa.string()), ("judge_vote", pa.string())])
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(table, schema=schema), sink)
        atomic_write(path, sink.getvalue().to_pybytes())
    else:
        raise ValueError(f"no table format {fmt!r}")
