"""The results file: one JSON record per line and nothing else, written so that a run can be
killed and resumed.

Beside ``OUT`` live ``OUT.meta.json`` (the settings and input of every run that wrote to it, see
:mod:`speculabel.io.runmeta`; each record names its run by fingerprint as ``run``) and, while a
run holds it, ``OUT.lock`` (:mod:`speculabel.io.lock`: a second run on the same output is
refused at once).  ``-o out.parquet`` / ``out.csv`` / ``out.tsv`` append to a journal
``OUT.journal.jsonl`` and write the table from it when the run ends (:mod:`speculabel.io.export`).
Records are appended and fsynced the moment each item is decided; the file is created with the
first record, so a run that fails before deciding anything leaves nothing behind.

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
from pathlib import Path

from speculabel.errors import SpeculabelError
from speculabel.io.export import journal_path, output_format, write_table
from speculabel.io.lock import OutputBusyError, OutputLock
from speculabel.io.runmeta import (
    FORMAT,
    KIND,
    ResultsError,
    RunInfo,
    atomic_write,
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
        self._done: dict[str, Record] = {}
        self._bad_rows: set[int] = set()
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
        runs = read_meta(self.meta)
        if (self.format != "jsonl" and runs is None and not self.journal.exists()
                and self.path.exists() and self.path.stat().st_size > 0):
            raise self._not_ours(str(self.path))
        data = self.journal.read_bytes() if self.journal.exists() else b""
        if not data.strip():  # no records: nothing to mix, earlier runs are forgotten
            last = (runs or [])[-1:]
            self._runs = last if last and (self.run.empty or last[0] == self.run) else []
            self._meta_current = bool(self._runs)
            return
        if runs is None:
            try:
                first = json.loads(data.split(b"\n", 1)[0].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                first = None
            if not (is_header(first) or is_record(first)):
                raise self._not_ours(str(self.journal))
        if not data.endswith(b"\n"):
            # torn write from a killed process: drop the partial line, it was never decided
            cut = data.rfind(b"\n") + 1
            with self.journal.open("r+b") as fh:
                fh.truncate(cut)
            data = data[:cut]
        lines = data.decode("utf-8").splitlines()
        records: list[Record] = []
        dropped: set[int] = set()
        retry = 0
        legacy: list[RunInfo] = []
        for i, line in enumerate(lines):
            if not line.strip():
                dropped.add(i)
                continue
            try:
                obj = json.loads(line)
                if is_header(obj):  # format 1: its header lines move into the sidecar
                    legacy.append(RunInfo.from_json(obj))
                    dropped.add(i)
                    continue
                rec = Record.from_json(obj)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise ResultsError(
                    f"{self.journal}: line {i + 1} is not a speculabel record ({e}); the file was "
                    "left untouched"
                ) from e
            if rec.retryable:
                dropped.add(i)
                retry += 1
            else:
                records.append(rec)
        # the sidecar, when there is one, was written from any header lines still in the file
        self._runs = runs if runs is not None else _collapse(legacy)
        self._check_run(records, headless=runs is None and not legacy)
        self.dropped_retryable = retry
        if legacy:  # the sidecar first: a file with headers and a sidecar still reads right
            self._write_meta(self._runs)
        if dropped:
            self._rewrite([line for i, line in enumerate(lines) if i not in dropped])
            self._changed = True
        self.saved = len(records)
        for rec in records:
            if rec.id is not None:
                self._done.setdefault(rec.id, rec)
            elif rec.row is not None:
                self._bad_rows.add(rec.row)

    def _check_run(self, records: list[Record], *, headless: bool) -> None:
        """Refuse to add to records of other settings or another input (unless allowed)."""
        if self.run.empty:
            self._meta_current = True
            return
        diff: list[str] = []
        if self._runs:
            diff = self.run.differences(self._runs[-1])
        elif headless:
            made = sorted({r.run for r in records if r.run} - {self.run.fingerprint})
            if made:
                diff = [f"its records were made by run {', '.join(made)}, this is run "
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

    def _rewrite(self, lines: list[str]) -> None:
        """The journal with only these lines, replaced atomically (fsynced before the rename)."""
        try:
            atomic_write(self.journal, "".join(line + "\n" for line in lines).encode("utf-8"))
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
    def done(self) -> dict[str, Record]:
        return self._done

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._done

    def is_done(self, entry: Item | RowError) -> bool:
        """Is there a record for this item (by id) or this bad row (by row number)?"""
        if isinstance(entry, RowError) and entry.id is None:
            return entry.row in self._bad_rows
        return entry.id in self._done

    # ------------------------------------------------------------------ writing
    def _write_failed(self, path: Path, e: OSError) -> ResultsWriteError:
        why = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file is too large",
               errno.EDQUOT: "the disk quota is exceeded"}.get(e.errno or 0, e.strerror or str(e))
        return ResultsWriteError(
            f"cannot write {path}: {why}; {self.saved} records are saved in {self.journal} "
            "(each one whole); free some space and rerun the same command to resume")

    def _append(self, data: bytes) -> None:
        """Append one whole line or nothing: a failed write is cut back to the last record."""
        if self._fd is None:
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise self._write_failed(self.journal, e) from None

    def write(self, record: Record) -> None:
        if record.id is not None and record.id in self._done:
            raise ValueError(f"record {record.id!r} already written to {self.journal}")
        if not self._meta_current:
            self._runs = [*self._runs, self.run]
            self._write_meta(self._runs)
            self._meta_current = True
        record.run = self.run.fingerprint
        self._append((json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        self.saved += 1
        self._changed = True
        if record.id is not None:
            self._done[record.id] = record
        elif record.row is not None:
            self._bad_rows.add(record.row)

    def write_bad_row(self, bad: RowError) -> Record:
        """Write a bad row's ``input`` record; the record written."""
        record = Record(bad.id, None, None, error=bad.error, error_kind="input", row=bad.row)
        self.write(record)
        return record

    def export(self) -> None:
        """Write the table (``-o x.parquet`` / ``.csv``) from the journal; JSON Lines: no-op."""
        if self.format == "jsonl" or not self.journal.exists():
            return
        if (not self._changed and self.path.exists()
                and self.path.stat().st_mtime_ns >= self.journal.stat().st_mtime_ns):
            return  # the table is as new as its journal
        lines = self.journal.read_text(encoding="utf-8").splitlines()
        try:
            write_table(self.path, self.format, [json.loads(x) for x in lines if x.strip()])
        except OSError as e:
            raise self._write_failed(self.path, e) from None
        self._changed = False

    def close(self) -> None:
        """Close the journal, write the table, release the lock (in that order)."""
        try:
            if self._fd is not None:
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
