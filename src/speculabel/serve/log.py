"""The service's append-only log: one JSON line per answered item, exactly once.

**Fsync policy (group commit).**  The records of the requests a micro-batch finishes are
written, flushed and fsynced together *before* any of those requests is answered, so an item a
client got an answer for is on disk, and it is written once (one writer thread, fed by the one
model thread; no item is decided twice).  A crash between the fsync and the response leaves a
logged item whose client saw an error: the log may hold an item its client did not get, never
the reverse.

Lines: the first is a ``start`` event (which marks the file as ours: any other file is refused
and left untouched), then items (``seq``: their place in the log, 0-based and contiguous over
restarts; ``request`` and ``index``: which request and where in it; then the record's fields)
and events (``start``, ``audit_state``, ``audit`` snapshots, ``stop``).  A restart with the same
log cuts a torn last line (from a kill mid-write, never answered), goes on numbering after the
last item and resumes the audit from its last snapshot.  No secret is written: records are
redacted (:meth:`speculabel.records.Record.to_json`) and the settings are redacted here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

from speculabel.errors import SpeculabelError

MARK = "speculabel_serve_log"


class LogError(SpeculabelError, ValueError):
    """The log cannot be opened: not ours, or not writable."""


class ServeLog:
    """Opened once by the service; written by one thread at a time (a lock guards it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.next_seq = 0
        self.last_audit: dict[str, Any] | None = None
        self.cut_bytes = 0
        self._f: IO[bytes] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ opening
    def open(self, settings: dict[str, Any]) -> None:
        """Check and scan an existing log (or create one), then append a ``start`` event."""
        if self.path.is_dir():
            raise LogError(f"--log {self.path} is a directory; give a file name")
        if self.path.exists() and self.path.stat().st_size > 0:
            self._scan()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LogError(f"cannot write --log {self.path}: {e.strerror or e}") from e
        try:
            self._f = open(self.path, "ab")  # noqa: SIM115 - held open for the service's life
        except OSError as e:
            raise LogError(f"cannot write --log {self.path}: {e.strerror or e}") from e
        self.append_events([{"event": "start", MARK: 1, "time": time.time(), "pid": os.getpid(),
                             "next_seq": self.next_seq, "cut_bytes": self.cut_bytes,
                             "settings": redacted(settings)}])

    def _scan(self) -> None:
        data = self.path.read_bytes()
        first = data.split(b"\n", 1)[0]
        try:
            head = json.loads(first)
        except ValueError:
            head = None
        if not (isinstance(head, dict) and head.get(MARK) == 1):
            raise LogError(f"--log {self.path} is not a speculabel serve log (its first line is "
                           "not ours); refusing to touch it: give a new file")
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: written by a killed process, never answered
            self.cut_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for n, raw in enumerate(data[:end].splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as e:
                raise LogError(f"--log {self.path} line {n}: not JSON ({e}); the log is damaged, "
                               "give a new file") from None
            if "seq" in line:
                self.next_seq = max(self.next_seq, int(line["seq"]) + 1)
            if "audit" in line:
                self.last_audit = line

    # ------------------------------------------------------------------ writing
    def append_batch(self, parts: list[tuple[str, list[Any]]], events: list[dict[str, Any]]) -> None:
        """One micro-batch: every request's records and any events, under one fsync."""
        now = time.time()
        with self._lock:
            lines: list[dict[str, Any]] = []
            for request, records in parts:
                for i, rec in enumerate(records):
                    lines.append({"seq": self.next_seq, "request": request, "index": i,
                                  "time": now, **rec.to_json()})
                    self.next_seq += 1
            lines.extend(events)
            self._write(lines)

    def append_events(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        with self._lock:
            self._write(events)

    def _write(self, lines: list[dict[str, Any]]) -> None:
        if self._f is None:
            raise LogError(f"--log {self.path} is not open")
        self._f.write(b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in lines))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self, event: dict[str, Any] | None = None) -> None:
        with self._lock:
            if self._f is None:
                return
            if event is not None:
                self._write([event])
            self._f.close()
            self._f = None


def redacted(value: Any) -> Any:
    """A JSON value with every string redacted (URLs with credentials, API keys)."""
    from speculabel.redact import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value
