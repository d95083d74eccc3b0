"""Input tables (CSV, TSV, JSON Lines, Parquet) read as items, one bad row never stopping a run.

A row that cannot become an item (empty text, a text that is a number or a list, a missing or
duplicate id, more or fewer fields than the header, bytes that are not UTF-8, a broken JSON line)
comes out as a :class:`RowError` naming the file and the row, with an id no other row has (its
own when it has a valid one, else its row number); the run records it and goes on.  A UTF-8
byte-order mark (Excel's "CSV UTF-8") is read as such, never as part of the first column name.
A file that cannot be read at all (missing, a directory, binary, not UTF-8 in its header, a
corrupt Parquet file, unknown columns, no data rows) raises :class:`InputError` before any model loads.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Generator, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speculabel.errors import SpeculabelError
from speculabel.records import Item
from speculabel.tasks import Task


class InputError(SpeculabelError, ValueError):
    """The input file cannot be read as asked; the message names the file, row or column."""


@dataclass(frozen=True)
class RowError:
    """A row that cannot become an item: its 1-based data row, the reason, and its id when the
    row has a valid one of its own (an empty text, say; never a duplicate's).  Recorded with the
    error; the run goes on."""

    row: int
    error: str
    id: str | None = None


#: every input file type by its suffix, and the format that reads it (both engines use this)
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".ndjson": "json", ".json": "json",
           ".parquet": "parquet"}
SUPPORTED = tuple(FORMATS)
_NUL = "\ue000"  # NUL bytes are replaced by this private-use character, then reported
_BAD = "__speculabel_row_error__"

Row = tuple[int, dict[str, Any]]  # (1-based data row, values by column); errors under _BAD


def _text_problem(values: Sequence[Any]) -> str | None:
    for v in values:
        if isinstance(v, str):
            if _NUL in v:
                return "contains NUL bytes (is this a binary file?)"
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return "has bytes that are not UTF-8 (save the file as UTF-8)"
    return None


def _csv_rows(path: Path, delimiter: str) -> tuple[list[str], Iterator[Row]]:
    fh = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    lines = (line.replace("\0", _NUL) for line in fh)
    reader = csv.DictReader(lines, delimiter=delimiter, restkey=_BAD)
    try:
        columns = list(reader.fieldnames or [])
    except csv.Error as e:
        fh.close()
        raise InputError(f"{path}: not a readable {path.suffix} file: {e}") from e
    problem = _text_problem(columns)
    if problem:
        fh.close()
        raise InputError(f"{path}: the header {problem}; is this a {path.suffix} text file?")

    def gen() -> Iterator[Row]:
        with fh:
            rowno = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    rowno += 1
                    yield rowno, {_BAD: f"line {reader.line_num}: {e}"}
                    continue
                rowno += 1
                extra = row.pop(_BAD, None)
                if extra is not None or any(v is None for v in row.values()):
                    n = len(columns) + len(extra or []) - sum(v is None for v in row.values())
                    hint = " (an unquoted delimiter in a text?)" if extra is not None else ""
                    yield rowno, {_BAD: f"has {n} fields, the header has {len(columns)}{hint}"}
                    continue
                problem = _text_problem(list(row.values()))
                # the fields are where they belong: the row keeps them (its id, say)
                yield rowno, ({**row, _BAD: problem} if problem else row)

    return columns, gen()


def _jsonl_rows(path: Path) -> tuple[list[str], Iterator[Row]]:
    columns: list[str] = []
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                first = json.loads(raw.decode("utf-8-sig"))
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: line 1 is not UTF-8 text ({e.reason} at byte "
                                 f"{e.start}); is this a JSON Lines file?") from e
            except json.JSONDecodeError as e:
                if raw.lstrip().startswith(b"["):
                    raise InputError(f"{path} holds a JSON array; speculabel reads JSON Lines "
                                     "(one JSON object per line)") from e
                raise InputError(f"{path}: the first line is not valid JSON: {e}") from e
            if isinstance(first, list):
                raise InputError(f"{path} holds a JSON array; speculabel reads JSON Lines "
                                 "(one JSON object per line)")
            if not isinstance(first, dict):
                raise InputError(f"{path}: the first line is not a JSON object; speculabel "
                                 "reads JSON Lines (one object per line)")
            columns = list(first)
            break

    def gen() -> Iterator[Row]:
        with path.open("rb") as fh3:
            rowno = 0
            for lineno, raw in enumerate(fh3, 1):
                if not raw.strip():
                    continue
                rowno += 1
                try:
                    obj = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
                except UnicodeDecodeError as e:
                    yield rowno, {_BAD: f"line {lineno} is not UTF-8 ({e.reason} at byte {e.start})"}
                    continue
                except json.JSONDecodeError as e:
                    yield rowno, {_BAD: f"line {lineno} is not valid JSON: {e}"}
                    continue
                if not isinstance(obj, dict):
                    yield rowno, {_BAD: f"line {lineno} is not a JSON object"}
                    continue
                yield rowno, obj

    return columns, gen()


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[Row]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InputError(
            f"{path}: reading Parquet needs pyarrow: pip install 'speculabel[parquet]'"
        ) from e
    try:
        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)
    except Exception as e:  # pyarrow raises its own errors (ArrowInvalid, OSError ...)
        raise InputError(f"{path}: not a readable Parquet file: {e}") from e

    def gen() -> Iterator[Row]:
        rowno = 0
        try:
            for batch in pf.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    rowno += 1
                    yield rowno, row
        except Exception as e:
            raise InputError(f"{path}: the Parquet file is damaged after row {rowno}: {e}") from e

    return columns, gen()


def parse_delimiter(value: str | None) -> str | None:
    """A ``--delimiter`` value as one character (``tab`` and ``\\t`` mean a tab); ``None``
    when not given; :class:`InputError` for anything else."""
    if value is None:
        return None
    char = "\t" if value.lower() in ("tab", "\\t", "\t") else value
    if len(char) != 1 or char in ('"', "\n", "\r"):
        raise InputError(f"--delimiter must be one character (or 'tab'), got {value!r}")
    return char


def _separator_hint(names: Sequence[str]) -> str:
    """A hint when the whole header landed in one column: another separator than the reader's."""
    if len(names) != 1:
        return ""
    for char, shown in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if char in names[0]:
            return f" (the header looks separated by {shown}: give --delimiter {shown})"
    return ""


def table_rows(path: Path, delimiter: str | None = None) -> tuple[list[str], Iterator[Row]]:
    """Column names and ``(row number, values)`` pairs for CSV, TSV, JSONL and Parquet;
    ``delimiter`` overrides the CSV/TSV field separator."""
    suffix = path.suffix.lower()
    fmt = FORMATS.get(suffix)
    if delimiter is not None and fmt not in ("csv", "tsv"):
        raise InputError(f"{path}: --delimiter is for .csv and .tsv files, not {suffix or 'this'}"
                         " file")
    if fmt in ("csv", "tsv"):
        return _csv_rows(path, delimiter or ("\t" if fmt == "tsv" else ","))
    if fmt == "json":
        return _jsonl_rows(path)
    if fmt == "parquet":
        return _parquet_rows(path)
    raise InputError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED)}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if not path.is_file():
        raise InputError(f"input path is not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty")


def read_rows(
    path: str | Path,
    task: Task,
    *,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    extra_columns: Sequence[str] = (),
    delimiter: str | None = None,
    seen: MutableMapping[str, int] | None = None,
) -> Generator[tuple[Item | RowError, dict[str, Any]], None, None]:
    """Items (or row errors) with the values of ``extra_columns`` (a gold column, say).  A bad
    row carries its own id when it has a valid one (never a duplicate's); :func:`read_items`
    gives the others their row number.  ``seen`` (id -> first row) finds duplicates: a dict by
    default; a streamed run passes a compact one (:mod:`speculabel.io.scan`)."""
    p = Path(path)
    _check_file(p)
    mapping = {f: (columns or {}).get(f) or f for f in task.fields}
    names, rows = table_rows(p, delimiter)
    wanted = [*mapping.values(), *([id_column] if id_column else []), *extra_columns]
    unknown = [c for c in dict.fromkeys(wanted) if c not in names]
    if unknown:
        raise InputError(
            f"{p}: unknown column(s) {', '.join(repr(c) for c in unknown)}; "
            f"the file has: {', '.join(names) or '(no columns)'}{_separator_hint(names)}"
        )
    if seen is None:
        seen = {}
    count = 0
    for rowno, row in rows:
        count += 1
        extras = {c: row.get(c) for c in extra_columns}
        item_id = str(row.get(id_column) if row.get(id_column) is not None else "").strip() \
            if id_column else str(rowno)
        if _BAD in row:
            own = item_id if item_id and item_id not in seen and not _text_problem([item_id]) \
                else None
            if own is not None:
                seen[own] = rowno
            yield RowError(rowno, f"{p}: row {rowno} {row[_BAD]}", own), extras
            continue
        if not item_id:
            yield RowError(rowno, f"{p}: row {rowno}: empty id in column {id_column!r}"), extras
            continue
        if item_id in seen:
            yield RowError(rowno, f"{p}: row {rowno}: duplicate id {item_id!r} (first in row "
                                  f"{seen[item_id]})"), extras
            continue
        seen[item_id] = rowno
        fields: dict[str, str] = {}
        problem = None
        for field, col in mapping.items():
            value = row.get(col)
            if value is not None and not isinstance(value, str):
                problem = (f"{p}: row {rowno}: column {col!r} holds {_kind(value)}, not a text "
                           "(give texts as strings)")
                break
            text = "" if value is None else value
            if not text.strip():
                problem = f"{p}: row {rowno}: empty text in column {col!r}"
                break
            fields[field] = text
        yield (RowError(rowno, problem, item_id) if problem else Item(item_id, fields, row=rowno)), extras
    if count == 0:
        raise InputError(f"{p} has no data rows (only a header, or only blank lines)")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def with_row_ids(entries: Sequence[Item | RowError]) -> list[Item | RowError]:
    """Every bad row without a valid id of its own gets one no other row has: its row number,
    else ``row-N`` (``row-N-2`` ...): a record always names its row, and two records never
    share an id.  The same file always gives the same ids (a rerun finds them)."""
    from dataclasses import replace

    taken = {e.id for e in entries if e.id is not None}
    out: list[Item | RowError] = []
    for e in entries:
        if isinstance(e, RowError) and e.id is None:
            candidates = [str(e.row), f"row-{e.row}"]
            k = 2
            while all(c in taken for c in candidates):
                candidates.append(f"row-{e.row}-{k}")
                k += 1
            new = next(c for c in candidates if c not in taken)
            taken.add(new)
            e = replace(e, id=new)
        out.append(e)
    return out


def read_items(
    path: str | Path,
    task: Task,
    *,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    delimiter: str | None = None,
) -> Iterator[Item | RowError]:
    """Items from a table; ``columns`` maps each task field to a column (default: same name).

    Ids default to the row number (1-based, header excluded); every bad row has an id too
    (see :func:`with_row_ids`), so the whole file is read before the first entry comes out.
    """
    yield from with_row_ids([entry for entry, _ in read_rows(
        path, task, columns=columns, id_column=id_column, delimiter=delimiter)])


def read_labelled(
    path: str | Path,
    task: Task,
    gold_column: str,
    *,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    delimiter: str | None = None,
) -> tuple[list[Item], list[str | None], list[RowError]]:
    """Items with their gold labels (``None`` where the cell is empty) and the bad rows.

    A gold label that is not one of the task's labels is refused with the labels it found.
    """
    items: list[Item] = []
    gold: list[str | None] = []
    bad: list[RowError] = []
    for entry, extras in read_rows(path, task, columns=columns, id_column=id_column,
                                   extra_columns=[gold_column], delimiter=delimiter):
        if isinstance(entry, RowError):
            bad.append(entry)
            continue
        value = extras.get(gold_column)
        items.append(entry)
        gold.append(None if value is None or not str(value).strip() else str(value).strip())
    unknown = sorted({g for g in gold if g is not None and g not in task.label_names})
    if unknown:
        raise InputError(
            f"{path}: gold column {gold_column!r} has label(s) {unknown[:5]} that task "
            f"{task.name!r} does not know ({', '.join(task.label_names)})"
        )
    return items, gold, bad
