"""The results file: one JSON record per line and nothing else, written so that a run can be
killed and resumed.

Beside ``OUT`` live ``OUT.meta.json`` (the settings and input of every run that wrote to it, see
:mod:`speculabel.io.runmeta`; each record names its run by fingerprint as ``run``) and, while a
run holds it, ``OUT.lock`` (:mod:`speculabel.io.lock`: a second run on the same output is
refused at once).  ``-o out.parquet`` / ``out.csv`` / ``out.tsv`` append to a journal
``OUT.journal.jsonl`` and write the table from it when the run ends (:mod:`speculabel.io.export`).
Records are appended the moment each item is decided (so a killed process keeps them) and
fsynced with it, or once a batch with ``write(..., sync=False)`` and :meth:`ResultsFile.sync`; the
file is created with the first record, so a run that fails before deciding anything leaves
nothing behind.  Nothing holds the records: the file is read and rewritten a line at a time
(:mod:`speculabel.io.journal`), and what stays in memory is one 16-byte key per id
(:mod:`speculabel.io.idset`), for resume and for refusing a second record of an id (a streamed
run, whose ids are distinct by construction, keeps only those the file held before it).

On restart the file is read back, in this order, so that nothing is ever lost or mixed:

1. it must be ours: an existing non-empty file with no sidecar whose first line is neither a
   record nor a format-1 header is refused untouched (``-o`` pointing at an input table, say);
2. a torn last line (a ``kill -9`` mid-write) is cut off: that item was never decided;
3. the run must be the same: other settings or another input are refused, naming what differs,
   unless explicitly allowed (then the sidecar lists both runs);
4. records of a *retryable* error kind (see :data:`speculabel.records.RETRYABLE_ERRORS`) are
   dropped (the file is rewritten atomically) so that the rerun decides those items again;
   a format-1 file has its header lines moved into the sidecar at the same time.

Every id already present is then skipped, and every bad row already recorded (by its row
number): a rerun never decides an item twice.  A write that fails (disk full) is cut back to the
last whole record and raises :class:`ResultsWriteError`, saying what is saved and how to resume.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speculabel.errors import SpeculabelError
from speculabel.io.export import journal_path, output_format, write_table
from speculabel.io.idset import IdSet, id_key
from speculabel.io.journal import blank, cut_torn_line, journal_lines, rewrite_journal
from speculabel.io.lock import OutputBusyError, OutputLock
from speculabel.io.runmeta import (
    FORMAT,
    KIND,
    ResultsError,
    RunInfo,
    is_header,
    is_record,
    meta_path,
    read_meta,
    write_meta,
)
from speculabel.io.tables import RowError
from speculabel.records import Item, Record

__all__ = ["FORMAT", "KIND", "OutputBusyError", "ResultsError", "ResultsFile",
           "ResultsWriteError", "RunInfo"]


class ResultsWriteError(ResultsError, SpeculabelError):
    """A record could not be written (disk full, file too large); every earlier one is saved."""


class ResultsFile:
    """Append-only JSONL results with crash-safe resume (see the module docstring).

    Everything that can be wrong with the path or the file is found when this is created, so a
    caller can open it before loading any model; from then until :meth:`close` this process
    holds the output's lock (``lock=False`` for a caller that holds it already).
    """

    def __init__(
        self,
        path: str | Path,
        run: RunInfo | None = None,
        *,
        allow_changed_run: bool = False,
        fsync: bool = True,
        lock: bool = True,
    ) -> None:
        self.path = Path(path)
        self.run = run or RunInfo()
        self.allow_changed_run = allow_changed_run
        self.fsync = fsync
        self.format = output_format(self.path)
        self.journal = journal_path(self.path, self.format)
        self.meta = meta_path(self.path)
        self._fd: int | None = None
        self._ids = IdSet()  # the ids of the records in the file (16 bytes each)
        self._bad_rows: set[int] = set()  # rows of records without an id (files of old runs)
        self._unsynced = False
        self._runs: list[RunInfo] = []
        self._meta_current = False
        self._changed = False
        self.saved = 0  # records in the file
        self.dropped_retryable = 0
        self._check_path(self.path)
        self._lock = OutputLock(self.path)
        if lock:
            try:
                self._lock.acquire()
            except OSError as e:
                raise ResultsError(f"cannot write {self._lock.path}: {e.strerror or e}") from e
        try:
            self._load()
        except BaseException:
            self._lock.release()
            raise

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _check_path(p: Path) -> None:
        """The output can be written (nothing is created but its folder)."""
        if p.is_dir():
            raise ResultsError(f"output {p} is a directory; give a file name, e.g. {p / 'out.jsonl'}")
        parent = p.parent
        for up in [parent, *parent.parents]:
            if up.exists():
                if not up.is_dir():
                    raise ResultsError(f"cannot write {p}: {up} is a file, not a directory")
                break
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResultsError(f"cannot write {p}: {e.strerror or e}") from e
        where = p if p.exists() else parent
        if not os.access(where, os.W_OK):
            raise ResultsError(f"cannot write {p}: {where} is not writable")

    def _not_ours(self, what: str) -> ResultsError:
        return ResultsError(f"{what} is not a speculabel results file ({what} has no settings "
                            f"file {self.meta.name} and its first line is not a record), so it "
                            "was left untouched; choose another output file")

    def _load(self) -> None:
        """Read the journal back as a stream (see the module docstring): only the ids are kept."""
        runs = read_meta(self.meta)
        if (self.format != "jsonl" and runs is None and not self.journal.exists()
                and self.path.exists() and self.path.stat().st_size > 0):
            raise self._not_ours(str(self.path))
        if blank(self.journal):  # no records: nothing to mix, earlier runs are forgotten
            last = (runs or [])[-1:]
            self._runs = last if last and (self.run.empty or last[0] == self.run) else []
            self._meta_current = bool(self._runs)
            return
        if runs is None:
            with self.journal.open("rb") as fh:
                head = fh.readline()
            try:
                first = json.loads(head.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                first = None
            if not (is_header(first) or is_record(first)):
                raise self._not_ours(str(self.journal))
        cut_torn_line(self.journal)  # a kill -9 mid-write: that item was never decided
        keys = bytearray()
        made: set[str] = set()
        dropped = retry = count = 0
        legacy: list[RunInfo] = []
        for i, _, obj in self._lines():
            if obj is None:
                dropped += 1
            elif is_header(obj):  # format 1: its header lines move into the sidecar
                legacy.append(RunInfo.from_json(obj))
                dropped += 1
            else:
                rec = self._record(i, obj)
                if rec.retryable:
                    dropped += 1
                    retry += 1
                    continue
                count += 1
                if rec.run:
                    made.add(rec.run)
                if rec.id is not None:
                    keys += id_key(rec.id)
                elif rec.row is not None:
                    self._bad_rows.add(rec.row)
        self._ids = IdSet.from_keys(keys)
        del keys
        # the sidecar, when there is one, was written from any header lines still in the file
        self._runs = runs if runs is not None else _collapse(legacy)
        self._check_run(made, headless=runs is None and not legacy)
        self.dropped_retryable = retry
        if legacy:  # the sidecar first: a file with headers and a sidecar still reads right
            self._write_meta(self._runs)
        if dropped:
            self._rewrite()
            self._changed = True
        self.saved = count

    def _lines(self) -> Iterator[tuple[int, bytes, Any]]:
        return journal_lines(self.journal)

    def _record(self, i: int, obj: Any) -> Record:
        try:
            return Record.from_json(obj)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ResultsError(
                f"{self.journal}: line {i + 1} is not a speculabel record ({e}); the file was "
                "left untouched"
            ) from e

    def _check_run(self, made: set[str], *, headless: bool) -> None:
        """Refuse to add to records of other settings or another input (unless allowed)."""
        if self.run.empty:
            self._meta_current = True
            return
        diff: list[str] = []
        if self._runs:
            diff = self.run.differences(self._runs[-1])
        elif headless:
            others = sorted(made - {self.run.fingerprint})
            if others:
                diff = [f"its records were made by run {', '.join(others)}, this is run "
                        f"{self.run.fingerprint} (its settings file {self.meta.name} is missing, "
                        "so what differs cannot be named)"]
        if diff and not self.allow_changed_run:
            raise ResultsError(
                f"{self.path} holds results of other settings or another input: "
                + "; ".join(diff)
                + ". Use another output file, or --allow-changed-run to add to it anyway "
                "(the records say which run made them)"
            )
        self._meta_current = bool(self._runs) and not diff

    def _rewrite(self) -> None:
        """The journal without its blank, header and retryable lines (replaced atomically)."""
        def keep(i: int, obj: Any) -> bool:
            return obj is not None and not is_header(obj) and not self._record(i, obj).retryable

        try:
            rewrite_journal(self.journal, keep)
        except OSError as e:
            raise ResultsError(f"cannot rewrite {self.journal}: {e.strerror or e}; it was left "
                               "as it was") from e

    def _write_meta(self, runs: list[RunInfo]) -> None:
        try:
            write_meta(self.meta, runs, self.journal.name,
                       None if self.format == "jsonl" else self.format)
        except OSError as e:
            raise self._write_failed(self.meta, e) from None

    # ------------------------------------------------------------------ reading
    @property
    def ids(self) -> IdSet:
        """The ids of the records in the file (kept as 16-byte keys, see :mod:`.idset`)."""
        return self._ids

    @property
    def done(self) -> dict[str, Record]:
        """Every record in the file with an id, by id, read from the journal now: this holds
        them all in memory (the adaptive path and tests use it; a streamed run never does)."""
        out: dict[str, Record] = {}
        if self.journal.exists():
            for i, _, obj in self._lines():
                if obj is not None and not is_header(obj):
                    rec = self._record(i, obj)
                    if rec.id is not None:
                        out.setdefault(rec.id, rec)
        return out

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._ids

    def is_done(self, entry: Item | RowError) -> bool:
        """Is there a record for this item (by id) or this bad row (by row number)?"""
        if isinstance(entry, RowError) and entry.id is None:
            return entry.row in self._bad_rows
        return entry.id in self._ids

    # ------------------------------------------------------------------ writing
    def _write_failed(self, path: Path, e: OSError) -> ResultsWriteError:
        why = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file is too large",
               errno.EDQUOT: "the disk quota is exceeded"}.get(e.errno or 0, e.strerror or str(e))
        return ResultsWriteError(
            f"cannot write {path}: {why}; {self.saved} records are saved in {self.journal} "
            "(each one whole); free some space and rerun the same command to resume")

    def _append(self, data: bytes, sync: bool = True) -> None:
        """Append whole lines or nothing: a failed write is cut back to the last record.
        ``sync=False``: not fsynced yet (:meth:`sync` does it, for a batch of records)."""
        if self._fd is None:
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self.fsync and sync:
                os.fsync(self._fd)
            self._unsynced = self.fsync and not sync
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise self._write_failed(self.journal, e) from None

    def sync(self) -> None:
        """fsync the records written with ``sync=False`` (a no-op when there are none)."""
        if self._fd is None or not self._unsynced:
            return
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise self._write_failed(self.journal, e) from None
        self._unsynced = False

    def write(self, record: Record, *, sync: bool = True, remember: bool = True) -> None:
        """Append one record (written before this returns, so a killed process keeps it);
        ``sync=False`` leaves the fsync to :meth:`sync` (a power cut may lose it then).  A
        record of an id already in the file is refused (ValueError).  ``remember=False``: a
        caller that knows its ids are distinct (a streamed run: one record a row, rows in
        order) keeps this run's ids out of memory; only the file's earlier ones are checked."""
        key = id_key(record.id) if record.id is not None else None
        if key is not None and self._ids.has_key(key):
            raise ValueError(f"record {record.id!r} already written to {self.journal}")
        if not self._meta_current:
            self._runs = [*self._runs, self.run]
            self._write_meta(self._runs)
            self._meta_current = True
        record.run = self.run.fingerprint
        self._append((json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8"),
                     sync)
        self.saved += 1
        self._changed = True
        if key is not None:
            if remember:
                self._ids.add_key(key)
        elif record.row is not None:
            self._bad_rows.add(record.row)

    def write_bad_row(self, bad: RowError, *, sync: bool = True, remember: bool = True) -> Record:
        """Write a bad row's ``input`` record; the record written."""
        record = Record(bad.id, None, None, error=bad.error, error_kind="input", row=bad.row)
        self.write(record, sync=sync, remember=remember)
        return record

    def export(self) -> None:
        """Write the table (``-o x.parquet`` / ``.csv``) from the journal; JSON Lines: no-op."""
        if self.format == "jsonl" or not self.journal.exists():
            return
        if (not self._changed and self.path.exists()
                and self.path.stat().st_mtime_ns >= self.journal.stat().st_mtime_ns):
            return  # the table is as new as its journal
        try:
            write_table(self.path, self.format,
                        (obj for _, _, obj in self._lines() if obj is not None))
        except OSError as e:
            raise self._write_failed(self.path, e) from None
        self._changed = False

    def close(self) -> None:
        """Close the journal, write the table, release the lock (in that order)."""
        try:
            if self._fd is not None:
                try:
                    self.sync()
                finally:
                    os.close(self._fd)
                    self._fd = None
            self.export()
        finally:
            self._lock.release()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _collapse(runs: list[RunInfo]) -> list[RunInfo]:
    """The runs of format-1 header lines, consecutive repeats once."""
    out: list[RunInfo] = []
    for r in runs:
        if not out or out[-1] != r:
            out.append(r)
    return out
