"""The results file: one JSON line per item, written so that a run can be killed and resumed.

Layout: the first line is a *header* ``{"speculabel": "results", "format": 1, "run": ...}``
naming the settings that decide labels (task, workers, judge, rule, threshold, calibration) and
the input (path, columns), with their fingerprint; every record after it carries that
fingerprint as ``run``.  Records are appended and flushed (and fsynced) the moment each item is
decided.

On restart the file is read back, in this order, so that nothing is ever lost or mixed:

1. it must be ours: an existing non-empty file whose first line is not a results header is
   refused untouched (``-o`` pointing at an input table, say);
2. a torn last line (a ``kill -9`` mid-write) is cut off: that item was never decided;
3. the run must be the same: other settings or another input are refused, naming what differs,
   unless explicitly allowed (then a new header starts a new section of the file);
4. records of a *retryable* error kind (see :data:`speculabel.records.RETRYABLE_ERRORS`) are
   dropped (the file is rewritten atomically) so that the rerun decides those items again.

Every id already present is then skipped, and every bad row already recorded (by its row
number): a rerun never decides an item twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from speculabel.io.tables import InputError, RowError
from speculabel.records import Item, Record

FORMAT = 1
KIND = "results"


class ResultsError(InputError):
    """The results file cannot be used; nothing in it was changed."""


@dataclass(frozen=True)
class RunInfo:
    """What made the records: the settings that decide labels and the input they come from."""

    settings: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        blob = json.dumps({"settings": self.settings, "input": self.input}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def header(self) -> dict[str, Any]:
        return {"speculabel": KIND, "format": FORMAT, "run": self.fingerprint,
                "settings": self.settings, "input": self.input}

    def differences(self, other: RunInfo) -> list[str]:
        """What differs, as ``key: then X, now Y`` lines (``other`` is the earlier run)."""
        out = []
        for part, now, then in (("", self.settings, other.settings),
                                ("input ", self.input, other.input)):
            for key in sorted(set(now) | set(then)):
                if now.get(key) != then.get(key):
                    out.append(f"{part}{key}: then {then.get(key)!r}, now {now.get(key)!r}")
        return out


def _is_header(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("speculabel") == KIND


class ResultsFile:
    """Append-only JSONL results with crash-safe resume (see the module docstring).

    Everything that can be wrong with the path or the file is found when this is created, so a
    caller can open it before loading any model.
    """

    def __init__(
        self,
        path: str | Path,
        run: RunInfo | None = None,
        *,
        allow_changed_run: bool = False,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.run = run or RunInfo()
        self.allow_changed_run = allow_changed_run
        self.fsync = fsync
        self._fh: IO[str] | None = None
        self._done: dict[str, Record] = {}
        self._bad_rows: set[int] = set()
        self._header_written = False
        self.dropped_retryable = 0
        self._check_path()
        self._load()

    # ------------------------------------------------------------------ opening
    def _check_path(self) -> None:
        p = self.path
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
            with p.open("a", encoding="utf-8"):
                pass
        except OSError as e:
            raise ResultsError(f"cannot write {p}: {e.strerror or e}") from e

    def _load(self) -> None:
        data = self.path.read_bytes()
        if not data:
            return
        first = data.split(b"\n", 1)[0]
        try:
            head = json.loads(first.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            head = None
        if not _is_header(head):
            raise ResultsError(
                f"{self.path} is not a speculabel results file (its first line is not a results "
                "header), so it was left untouched; choose another output file"
            )
        if not data.endswith(b"\n"):
            # torn write from a killed process: drop the partial line, it was never decided
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as fh:
                fh.truncate(cut)
            data = data[:cut]
        last_run = RunInfo()
        lines = data.decode("utf-8").splitlines()
        records: list[Record] = []
        retry_lines: set[int] = set()
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if _is_header(obj):
                    last_run = RunInfo(obj.get("settings") or {}, obj.get("input") or {})
                    continue
                rec = Record.from_json(obj)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ResultsError(
                    f"{self.path}: line {lineno} is not a speculabel record ({e}); the file was "
                    "left untouched"
                ) from e
            if rec.retryable:
                retry_lines.add(lineno - 1)
            else:
                records.append(rec)
        if self.run.settings or self.run.input:
            diff = self.run.differences(last_run)
            if diff and not self.allow_changed_run:
                raise ResultsError(
                    f"{self.path} holds results of other settings or another input: "
                    + "; ".join(diff)
                    + ". Use another output file, or --allow-changed-run to add to it anyway "
                    "(the records say which run made them)"
                )
            self._header_written = not diff
        else:
            self._header_written = True
        self.dropped_retryable = len(retry_lines)
        if retry_lines:
            self._rewrite([line for i, line in enumerate(lines) if i not in retry_lines])
        for rec in records:
            if rec.id is not None:
                self._done.setdefault(rec.id, rec)
            elif rec.row is not None:
                self._bad_rows.add(rec.row)

    def _rewrite(self, lines: list[str]) -> None:
        """The file with only these lines, replaced atomically (fsynced before the rename)."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

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
    def _line(self, obj: dict[str, Any]) -> None:
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def write(self, record: Record) -> None:
        if record.id is not None and record.id in self._done:
            raise ValueError(f"record {record.id!r} already written to {self.path}")
        if not self._header_written:
            self._line(self.run.header())
            self._header_written = True
        record.run = self.run.fingerprint
        self._line(record.to_json())
        assert self._fh is not None
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        if record.id is not None:
            self._done[record.id] = record
        elif record.row is not None:
            self._bad_rows.add(record.row)

    def write_bad_row(self, bad: RowError) -> None:
        self.write(Record(bad.id, None, None, error=bad.error, error_kind="input", row=bad.row))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
