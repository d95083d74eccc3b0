"""Reading input tables and writing results so that a run can be killed and resumed.

The results file is JSON Lines, one :class:`Record` per item, appended and flushed (and fsynced)
the moment the item is decided.  On restart the file is read back: a torn last line (from a
``kill -9`` mid-write) is cut off, and every id already present is skipped.  So a rerun of the
same command never loses a decided item and never decides one twice.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from speculabel.records import Item, Record
from speculabel.task import Task


class InputError(ValueError):
    """The input file cannot be read as asked; the message names the file, row or column."""


@dataclass(frozen=True)
class RowError:
    """A row that cannot become an item; it is recorded with its error, the run goes on."""

    id: str
    error: str


SUPPORTED = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")


def _rows(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """Column names and an iterator over rows (as dicts) for CSV, TSV, JSONL and Parquet."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        fh = path.open(newline="", encoding="utf-8")
        reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
        columns = list(reader.fieldnames or [])

        def gen_csv() -> Iterator[dict[str, Any]]:
            with fh:
                yield from reader

        return columns, gen_csv()
    if suffix in (".jsonl", ".ndjson", ".json"):
        columns = []
        with path.open(encoding="utf-8") as fh2:
            for line in fh2:
                if line.strip():
                    try:
                        first = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{path}: line 1 is not valid JSON: {e}") from e
                    if isinstance(first, dict):
                        columns = list(first)
                    break

        def gen_jsonl() -> Iterator[dict[str, Any]]:
            with path.open(encoding="utf-8") as fh3:
                for lineno, line in enumerate(fh3, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        yield {"__error__": f"{path}: line {lineno} is not valid JSON: {e}"}
                        continue
                    if not isinstance(obj, dict):
                        yield {"__error__": f"{path}: line {lineno} is not a JSON object"}
                        continue
                    yield obj

        return columns, gen_jsonl()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise InputError(
                f"{path}: reading Parquet needs pyarrow: pip install 'speculabel[parquet]'"
            ) from e
        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)

        def gen_parquet() -> Iterator[dict[str, Any]]:
            for batch in pf.iter_batches(batch_size=1024):
                yield from batch.to_pylist()

        return columns, gen_parquet()
    raise InputError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED)}")


def read_items(
    path: str | Path,
    task: Task,
    *,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
) -> Iterator[Item | RowError]:
    """Items from a table; ``columns`` maps each task field to a column (default: same name).

    Ids default to the row number (1-based, header excluded).  Bad rows (empty text, a missing
    value) come out as :class:`RowError` so that one bad row never stops a run.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    if not p.is_file():
        raise InputError(f"input path is not a file: {p}")
    mapping = {f: (columns or {}).get(f) or f for f in task.fields}
    names, rows = _rows(p)
    wanted = list(mapping.values()) + ([id_column] if id_column else [])
    unknown = [c for c in wanted if c not in names]
    if unknown and names:
        raise InputError(
            f"{p}: unknown column(s) {', '.join(repr(c) for c in unknown)}; "
            f"the file has: {', '.join(names)}"
        )
    if not names:
        return
    seen: set[str] = set()
    for rowno, row in enumerate(rows, 1):
        if "__error__" in row:
            yield RowError(str(rowno), str(row["__error__"]))
            continue
        item_id = str(row.get(id_column, "")).strip() if id_column else str(rowno)
        if not item_id:
            yield RowError(str(rowno), f"{p}: row {rowno}: empty id in column {id_column!r}")
            continue
        if item_id in seen:
            yield RowError(f"{item_id}#row{rowno}", f"{p}: row {rowno}: duplicate id {item_id!r}")
            continue
        seen.add(item_id)
        fields: dict[str, str] = {}
        problem = None
        for field, col in mapping.items():
            value = row.get(col)
            text = "" if value is None else str(value)
            if not text.strip():
                problem = f"{p}: row {rowno}: empty text in column {col!r}"
                break
            fields[field] = text
        if problem:
            yield RowError(item_id, problem)
        else:
            yield Item(item_id, fields)


class ResultsFile:
    """Append-only JSONL results with crash-safe resume."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fh: IO[str] | None = None
        self._done: dict[str, Record] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # torn write from a killed process: drop the partial line, it was never decided
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as fh:
                fh.truncate(cut)
            data = data[:cut]
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = Record.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InputError(
                    f"{self.path}: line {lineno} is not a speculabel record ({e}); "
                    "choose another output file"
                ) from e
            self._done[rec.id] = rec

    @property
    def done(self) -> dict[str, Record]:
        return self._done

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._done

    def write(self, record: Record) -> None:
        if record.id in self._done:
            raise ValueError(f"record {record.id!r} already written to {self.path}")
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self._done[record.id] = record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
