"""A persistent cache of model votes: one row per (model, task prompt, item).

Why: a model's distribution for an item never changes while the model file, the task's prompt
and the item's text stay the same, so it is computed once.  A second benchmark, a new acceptance
rule or a new threshold then costs no model call, and an interrupted run continues where it
stopped.  The cascade uses the same store.

Keys:

* ``model_fp``: :meth:`Backend.vote_fingerprint` (the model file's hash for local models, plus
  what changes its votes on that task, such as label pruning).
* ``task_fp``: :meth:`Task.fingerprint` (labels, instructions, template, examples: the prompt).
* ``item_key``: :func:`item_key`, a hash of the item's field values in the task's field order.

Each row also keeps the cost of the vote: wall-clock latency (``Vote.latency_s``) and CPU time
per item (``cpu_s``, the process-time delta of its batch divided by the batch size), so a
benchmark can model a cascade's cost from the store alone.

The database runs in WAL mode: many readers (another bench, a report) can read while one
writer writes.  One :class:`VoteStore` may be shared by threads (calls are serialised by a lock);
many processes may share one file (two runs on different outputs, the default home): a busy
database is waited for (``busy_timeout``) and the operation retried a bounded number of times, so
"database is locked" does not end a run.  Any other SQLite fault (a read-only file, a damaged
page, a full disk) becomes a :class:`VoteStoreError` whose one line names the file and the remedy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from speculabel.errors import SpeculabelError
from speculabel.records import Item, Vote
from speculabel.tasks import Task

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    model_fp  TEXT NOT NULL,
    task_fp   TEXT NOT NULL,
    item_key  TEXT NOT NULL,
    model     TEXT NOT NULL,
    label     TEXT,
    probs     TEXT NOT NULL,
    latency_s REAL NOT NULL DEFAULT 0,
    cpu_s     REAL,
    method    TEXT NOT NULL DEFAULT '',
    error     TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL,
    PRIMARY KEY (model_fp, task_fp, item_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# SQLite limits the number of host parameters per statement; stay well below it.
_CHUNK = 500
#: tries of one operation while another process holds the database (each waits busy_timeout)
_BUSY_TRIES = 8

T = TypeVar("T")


def item_key(task: Task, item: Item) -> str:
    """Hash of the item's field values, in the task's field order (the item id is not used).

    Two items with the same text get the same key, whichever file or id they came from.
    """
    values = [item.fields.get(f, "") for f in task.fields]
    blob = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class VoteStoreError(SpeculabelError, RuntimeError):
    """The vote store cannot be opened or used; the message names its path."""


def _busy(e: sqlite3.Error) -> bool:
    msg = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)


def fault_message(path: Path, e: BaseException, doing: str = "use") -> str:
    """One line for a store fault, with the remedy that fits it (a damaged file is not cured by
    choosing a writable one)."""
    msg = str(e)
    low = msg.lower()
    if "readonly" in low or "read-only" in low or isinstance(e, PermissionError):
        return (f"cannot write the vote store {path}: {msg}; choose a writable file with --votes "
                "(or $SPECULABEL_HOME a writable folder), or use --no-votes")
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return (f"the vote store {path} is damaged ({msg}): move or delete it (it only caches "
                "votes; they are asked again), or use --no-votes")
    if "disk is full" in low or "no space" in low:
        return (f"cannot write the vote store {path}: the disk is full; free some space and "
                "rerun the same command, or use --no-votes")
    return (f"cannot {doing} the vote store {path}: {msg}; point --votes at a writable file "
            "(or $SPECULABEL_HOME at a writable folder), or use --no-votes")


@dataclass(frozen=True)
class StoredVote:
    """A cached vote with its CPU time per item (``None`` when the writer did not measure it)."""

    vote: Vote
    cpu_s: float | None
    created: float


class VoteStore:
    """SQLite-backed vote cache (see the module docstring).

    ``get_many`` treats a stored abstention as missing unless ``include_abstentions`` is set:
    an abstention may come from a passing failure (a timeout), so it is asked again and
    overwritten rather than reused forever.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._timeout_s = timeout_s
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(path), timeout=timeout_s, check_same_thread=False, isolation_level=None
            )
            row = self._retry(self._open)
        except (sqlite3.Error, OSError) as e:
            self.close()
            raise VoteStoreError(fault_message(self.path, e, "open")) from e
        if row is not None and int(row[0]) != SCHEMA_VERSION:
            self.close()
            raise VoteStoreError(
                f"{self.path}: vote store schema {row[0]}, this version reads {SCHEMA_VERSION}; "
                "use another --votes path"
            )

    # ------------------------------------------------------------------ internals

    def _open(self) -> tuple[str] | None:
        """Settings and schema; then a write, so that a read-only file is found now, not after
        hours of votes.  Returns the stored schema row (``None`` for a new store)."""
        conn = self.conn
        wait_ms = int(self._timeout_s * 1000)
        conn.execute(f"PRAGMA busy_timeout={wait_ms}")
        if str(self.path) != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)",
                         (str(SCHEMA_VERSION),))
            return None
        # the write probe never waits: a store another process is writing to is writable
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('opened', ?)",
                         (str(time.time()),))
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            _rollback(conn)
            if not _busy(e):
                raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={wait_ms}")
        return (str(row[0]),)

    def _retry(self, op: Callable[[], T]) -> T:
        """``op()``, tried again while another process holds the database.  SQLite waits up to
        ``busy_timeout`` itself, but answers "locked" at once where waiting could deadlock (a
        snapshot gone stale, a journal-mode change); bounded by tries and by time."""
        give_up = time.monotonic() + 2 * self._timeout_s
        for attempt in range(_BUSY_TRIES):
            try:
                return op()
            except sqlite3.Error as e:
                if not _busy(e) or attempt == _BUSY_TRIES - 1 or time.monotonic() > give_up:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")

    def _guarded(self, op: Callable[[], T], doing: str) -> T:
        """``op()`` under the lock, retried while busy; any other fault is one clear line."""
        with self._lock:
            try:
                return self._retry(op)
            except sqlite3.Error as e:
                raise VoteStoreError(fault_message(self.path, e, doing)) from e

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"vote store {self.path} is closed")
        return self._conn

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])

    # ------------------------------------------------------------------ reading

    def get_many_stored(
        self,
        model_fp: str,
        task_fp: str,
        keys: Sequence[str],
        *,
        include_abstentions: bool = False,
        model_name: str | None = None,
    ) -> dict[str, StoredVote]:
        """Stored votes (with CPU time) for those keys that have one; missing keys are absent.

        ``model_name`` renames the returned votes (the same file may be known by two specs).
        Every returned vote has ``cached=True``.
        """
        uniq = list(dict.fromkeys(keys))

        def read() -> list[Any]:
            found: list[Any] = []
            for i in range(0, len(uniq), _CHUNK):
                chunk = uniq[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found += self.conn.execute(
                    "SELECT item_key, model, label, probs, latency_s, cpu_s, method, error, "
                    "truncated, created FROM votes "
                    f"WHERE model_fp=? AND task_fp=? AND item_key IN ({marks})",
                    (model_fp, task_fp, *chunk),
                ).fetchall()
            return found

        out: dict[str, StoredVote] = {}
        for key, model, label, probs, lat, cpu, method, error, trunc, created in self._guarded(
            read, "read"
        ):
            if label is None and not include_abstentions:
                continue
            vote = Vote(
                model=model_name if model_name is not None else model,
                label=label,
                probs={k: float(v) for k, v in json.loads(probs).items()},
                latency_s=float(lat),
                method=method,
                error=error,
                truncated=bool(trunc),
                cached=True,
            )
            out[key] = StoredVote(vote, None if cpu is None else float(cpu), float(created))
        return out

    def get_many(
        self,
        model_fp: str,
        task_fp: str,
        keys: Sequence[str],
        *,
        include_abstentions: bool = False,
        model_name: str | None = None,
    ) -> dict[str, Vote]:
        """Stored votes for those keys that have one (``cached=True``); missing keys are absent."""
        stored = self.get_many_stored(
            model_fp, task_fp, keys, include_abstentions=include_abstentions, model_name=model_name
        )
        return {k: s.vote for k, s in stored.items()}

    def get(
        self,
        model_fp: str,
        task_fp: str,
        key: str,
        *,
        include_abstentions: bool = False,
        model_name: str | None = None,
    ) -> Vote | None:
        return self.get_many(
            model_fp, task_fp, [key], include_abstentions=include_abstentions, model_name=model_name
        ).get(key)

    def count(self, model_fp: str | None = None, task_fp: str | None = None) -> int:
        """Number of stored votes (abstentions included), optionally for one model / task."""
        sql, args = "SELECT COUNT(*) FROM votes WHERE 1=1", []
        if model_fp is not None:
            sql += " AND model_fp=?"
            args.append(model_fp)
        if task_fp is not None:
            sql += " AND task_fp=?"
            args.append(task_fp)
        return int(self._guarded(lambda: self.conn.execute(sql, args).fetchone()[0], "read"))

    # ------------------------------------------------------------------ writing

    def put_many(
        self,
        model_fp: str,
        task_fp: str,
        rows: Iterable[tuple[str, Vote]],
        *,
        cpu_s: float | Sequence[float | None] | None = None,
    ) -> None:
        """Store (or replace) ``(item_key, vote)`` rows in one transaction.

        ``cpu_s`` is the CPU time per item: one number for every entry (a batch's process-time
        delta divided by its size) or one per entry.
        """
        pairs = list(rows)
        if cpu_s is None or isinstance(cpu_s, (int, float)):
            cpus: list[float | None] = [None if cpu_s is None else float(cpu_s)] * len(pairs)
        else:
            cpus = list(cpu_s)
            if len(cpus) != len(pairs):
                raise ValueError(f"cpu_s has {len(cpus)} values for {len(pairs)} votes")
        # a passing fault (a server that was down) says nothing about the item: never stored
        kept = [(p, c) for p, c in zip(pairs, cpus, strict=True) if not p[1].retryable]
        pairs, cpus = [p for p, _ in kept], [c for _, c in kept]
        now = time.time()
        values = [
            (
                model_fp,
                task_fp,
                key,
                v.model,
                v.label,
                json.dumps(v.probs, separators=(",", ":")),
                float(v.latency_s),
                c,
                v.method,
                v.error,
                int(v.truncated),
                now,
            )
            for (key, v), c in zip(pairs, cpus, strict=True)
        ]
        if not values:
            return

        def write() -> None:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO votes (model_fp, task_fp, item_key, model, label, "
                    "probs, latency_s, cpu_s, method, error, truncated, created) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    values,
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

        self._guarded(write, "write")

    def put(
        self, model_fp: str, task_fp: str, key: str, vote: Vote, *, cpu_s: float | None = None
    ) -> None:
        self.put_many(model_fp, task_fp, [(key, vote)], cpu_s=cpu_s)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> VoteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction; a fault while doing so must not hide the first one."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
