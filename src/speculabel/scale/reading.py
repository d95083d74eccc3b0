"""Reading the input for the Ray engine: Ray's own readers, and one pass over the ids before any
model loads (Ray has no row order, so ids are the key: every row needs a unique one).

Differences from the single-process reader, all refused before a model loads rather than
recorded row by row: a row without an id, a duplicate id, and a file Ray's (pyarrow's) reader
cannot parse (a row with the wrong number of fields, bytes that are not UTF-8).  An empty text
is still recorded as an ``input`` error under its id.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from speculabel.io.tables import FORMATS, InputError

#: CPUs the cheap steps (read, prepare, rule, write) reserve: a token, so they never wait for
#: the actors' CPUs (they take milliseconds per batch)
LIGHT_CPUS = 0.05


def input_format(path: str) -> str:
    """``csv``, ``tsv``, ``json`` or ``parquet`` from the name (a local directory: its files)."""
    stem = path.rstrip("/")
    suffix = os.path.splitext(stem)[1].lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    if "://" not in path and os.path.isdir(stem):
        kinds = {FORMATS.get(os.path.splitext(n)[1].lower()) for n in os.listdir(stem)
                 if not n.startswith((".", "_"))}
        kinds.discard(None)
        if len(kinds) == 1:
            return str(kinds.pop())
        raise InputError(f"{path}: a directory of {' and '.join(sorted(map(str, kinds))) or 'no'} "
                         f"tables; it must hold one kind of {', '.join(FORMATS)} files")
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; use one of "
                     f"{', '.join(FORMATS)} (or a directory of them)")


def read_input(path: str, needed: list[str], *, select: bool = True) -> Any:
    """The input as a Ray dataset: only the ``needed`` columns (all of them without ``select``),
    CSV cells as strings (an id ``007`` stays ``007``), quoted newlines allowed."""
    import pyarrow as pa
    import ray.data

    fmt = input_format(path)
    if fmt in ("csv", "tsv"):
        import pyarrow.csv as pacsv

        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in needed},
            include_columns=needed if select else None, strings_can_be_null=False)
        parse = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
        return ray.data.read_csv(path, parse_options=parse, convert_options=convert,
                                 num_cpus=LIGHT_CPUS, file_extensions=[fmt])
    if fmt == "parquet":
        return ray.data.read_parquet(path, columns=needed if select else None, num_cpus=LIGHT_CPUS)
    ds = ray.data.read_json(path, num_cpus=LIGHT_CPUS,
                            file_extensions=["json", "jsonl", "ndjson"])
    return ds.select_columns(needed) if select else ds


@dataclass
class InputCheck:
    """What the driver learns from one pass over the ids, before any model loads."""

    rows: int = 0
    done: int = 0


def check_ids(ds: Any, path: str, id_column: str, needed: list[str],
              done: frozenset[str] = frozenset()) -> InputCheck:
    """One pass over the ids: every row needs a unique, non-empty one (Ray has no row order to
    say which of two duplicates came first, so duplicates are refused, not recorded)."""
    seen: set[str] = set()
    dupes: list[str] = []
    empty = 0
    out = InputCheck()
    ids = ds.select_columns([id_column]).iter_batches(batch_format="pyarrow", batch_size=None)
    try:
        with _silent():  # a reader's failure becomes one line below, not Ray's traceback
            for batch in ids:
                for value in batch.column(id_column).to_pylist():
                    rid = "" if value is None else str(value).strip()
                    out.rows += 1
                    if not rid:
                        empty += 1
                    elif rid in seen:
                        dupes.append(rid)
                    else:
                        seen.add(rid)
                        out.done += rid in done
    except Exception as e:  # Ray wraps the reader's own error types
        raise InputError(_read_problem(path, needed, e)) from None
    if not out.rows:
        raise InputError(f"{path} has no data rows")
    if empty or dupes:
        parts = []
        if empty:
            parts.append(f"{empty} rows have an empty id in column {id_column!r}")
        if dupes:
            shown = ", ".join(repr(d) for d in dupes[:5])
            parts.append(f"{len(dupes)} duplicate ids ({shown}{' ...' if len(dupes) > 5 else ''})")
        raise InputError(f"{path}: {'; '.join(parts)}; --engine ray needs one unique id per row "
                         "(fix the input, or use --engine local, which records such rows as errors)")
    return out


def _read_problem(path: str, needed: list[str], err: Exception) -> str:
    """The reader's failure as one line: unknown columns named, else its own first line."""
    try:
        with _silent():
            names = list(read_input(path, needed, select=False).columns())
    except Exception:
        names = []
    unknown = [c for c in needed if names and c not in names]
    if unknown:
        return (f"{path}: unknown column(s) {', '.join(repr(c) for c in unknown)}; the file has: "
                f"{', '.join(names)}")
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    tail = next((ln for ln in reversed(lines) if "Error" in ln or "Invalid" in ln),
                lines[-1] if lines else type(err).__name__)
    return f"{path}: cannot be read by Ray's reader: {tail.strip()}"


@contextlib.contextmanager
def _silent() -> Iterator[None]:
    """Ray Data's own error logging off for a moment (the caller reports the error itself)."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
