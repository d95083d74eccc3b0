"""The match output: one JSON line per ticket, nothing else; settings and work in sidecars.

``OUT`` holds one line per queue ticket (``.jsonl``), or one row per ticket (``.csv``,
``.parquet``).  Beside it:

* ``OUT.meta.json``: the settings that decide matches and the input, with their fingerprint.
  It marks ``OUT`` as ours: an existing ``OUT`` without it is refused untouched, and a rerun
  with other settings or another input is refused, naming what differs.
* ``OUT.pairs.jsonl``: the journal of the pair stage, one line per candidate pair decided,
  flushed and fsynced as it is decided (the expensive part: the judge).  A rerun skips every
  pair in it, also after ``kill -9`` (a torn last line is cut); pairs left pending because the
  judge was unavailable are dropped from it and decided again.
* ``OUT.lock``: held while a run writes, so two runs never write the same output.

A ticket's group depends on every pair, so ticket lines are written once all pairs are decided
(none while some are pending because the judge was unavailable);
a JSON Lines output is appended and fsynced, and a rerun writes only the tickets not in it yet
(the groups are a function of the journal, so they come out the same).  CSV and Parquet are
written whole to a temporary file, fsynced and renamed into place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from speculabel.io.runmeta import RunInfo
from speculabel.io.tables import InputError

FORMAT = 1
KIND = "match"
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
RETRYABLE = ("no_judge",)


class MatchOutputError(InputError):
    """The output cannot be used; nothing in it was changed."""


@dataclass(frozen=True)
class MatchRunInfo(RunInfo):
    """The settings that decide matches and the input they come from (fingerprinted as a
    results file's run is)."""

    def meta(self) -> dict[str, Any]:
        return {"speculabel": KIND, "format": FORMAT, "run": self.fingerprint,
                "settings": self.settings, "input": self.input}

    def differences_from(self, then: dict[str, Any]) -> list[str]:
        out = []
        for part, now, old in (("", self.settings, then.get("settings") or {}),
                               ("input ", self.input, then.get("input") or {})):
            for key in sorted(set(now) | set(old)):
                if json.dumps(now.get(key), default=str) != json.dumps(old.get(key), default=str):
                    out.append(f"{part}{key}: then {old.get(key)!r}, now {now.get(key)!r}")
        return out


def ticket_key(rec: dict[str, Any]) -> str:
    """A ticket record's key: its id, or its row for a bad row without an id of its own."""
    return str(rec["id"]) if rec.get("id") is not None else f"row:{rec.get('row')}"


def sidecar(path: Path, what: str) -> Path:
    return path.with_name(f"{path.name}.{what}")


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _cut_torn(path: Path) -> bytes:
    """The file's bytes without a torn last line (cut from the file as well)."""
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    return data


def _json_lines(path: Path, data: bytes) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MatchOutputError(f"{path}: line {lineno} is not JSON ({e}); the file was left "
                                   "untouched") from e
        if not isinstance(obj, dict):
            raise MatchOutputError(f"{path}: line {lineno} is not a JSON object; the file was "
                                   "left untouched")
        yield obj


class MatchOutput:
    """Opens (or resumes) a match output; every check happens here, before any model loads."""

    def __init__(self, path: str | Path, run: MatchRunInfo, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.run = run
        self.fsync = fsync
        self.meta_path = sidecar(self.path, "meta.json")
        self.pairs_path = sidecar(self.path, "pairs.jsonl")
        self.format = self.path.suffix.lower()
        if self.format not in SUFFIXES:
            raise MatchOutputError(f"output {self.path}: unsupported type {self.format!r}; use "
                                   f"one of {', '.join(SUFFIXES)}")
        self._check_path()
        self._lock = self._take_lock()
        try:
            self._check_ours()
            self.pairs: dict[str, dict[str, Any]] = self._load_pairs()
            self.tickets_done: set[str] = self._load_tickets()
        except BaseException:
            self._lock.release()
            raise
        self._pairs_fh: IO[str] | None = None

    # ------------------------------------------------------------------ opening
    def _check_path(self) -> None:
        p = self.path
        if p.is_dir():
            raise MatchOutputError(f"output {p} is a directory; give a file name, e.g. "
                                   f"{p / 'matches.jsonl'}")
        for up in [p.parent, *p.parent.parents]:
            if up.exists():
                if not up.is_dir():
                    raise MatchOutputError(f"cannot write {p}: {up} is a file, not a directory")
                break
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MatchOutputError(f"cannot write {p}: {e.strerror or e}") from e

    def _take_lock(self) -> Any:
        from filelock import FileLock, Timeout

        lock = FileLock(str(sidecar(self.path, "lock")))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise MatchOutputError(f"{self.path} is being written by another run (lock "
                                   f"{lock.lock_file}); wait for it or use another output") from None
        except OSError as e:
            raise MatchOutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        return lock

    def _check_ours(self) -> None:
        out_used = self.path.exists() and self.path.stat().st_size > 0
        if not self.meta_path.exists():
            if out_used or self.pairs_path.exists():
                raise MatchOutputError(
                    f"{self.path} is not a speculabel match output (no {self.meta_path.name} "
                    "beside it), so it was left untouched; choose another output file")
            _fsync_write(self.meta_path, (json.dumps(self.run.meta(), indent=1) + "\n").encode())
            return
        try:
            then = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MatchOutputError(f"{self.meta_path} is not a match settings file ({e}); "
                                   "nothing was changed") from e
        if not isinstance(then, dict) or then.get("speculabel") != KIND:
            raise MatchOutputError(f"{self.meta_path} is not a match settings file; nothing "
                                   "was changed; choose another output file")
        diff = self.run.differences_from(then)
        nothing_yet = not out_used and not (self.pairs_path.exists()
                                            and self.pairs_path.stat().st_size > 0)
        if diff and nothing_yet:  # an earlier run stopped before deciding anything
            _fsync_write(self.meta_path, (json.dumps(self.run.meta(), indent=1) + "\n").encode())
            return
        if diff:
            raise MatchOutputError(
                f"{self.path} holds matches of other settings or another input: "
                + "; ".join(diff) + ". Use another output file (or delete it and its "
                f"{self.meta_path.name} and {self.pairs_path.name})")

    def _load_pairs(self) -> dict[str, dict[str, Any]]:
        data = _cut_torn(self.pairs_path)
        done: dict[str, dict[str, Any]] = {}
        keep: list[str] = []
        dropped = 0
        for obj in _json_lines(self.pairs_path, data):
            if "key" not in obj:
                raise MatchOutputError(f"{self.pairs_path}: a line without a pair key; the file "
                                       "was left untouched")
            if obj.get("error_kind") in RETRYABLE:
                dropped += 1
                continue
            done.setdefault(str(obj["key"]), obj)
            keep.append(json.dumps(obj, ensure_ascii=False))
        if dropped:
            _fsync_write(self.pairs_path, "".join(line + "\n" for line in keep).encode())
        self.dropped_pending = dropped
        return done

    def _load_tickets(self) -> set[str]:
        if self.format not in (".jsonl", ".ndjson", ".json"):
            return set()  # written whole at the end: a rerun writes it again, the same
        data = _cut_torn(self.path)
        done = set()
        for obj in _json_lines(self.path, data):
            if "id" not in obj or "group" not in obj:
                raise MatchOutputError(f"{self.path}: a line that is not a ticket record; the "
                                       "file was left untouched")
            done.add(ticket_key(obj))
        return done

    # ------------------------------------------------------------------ writing
    def write_pair(self, entry: dict[str, Any]) -> None:
        """Journal one decided pair (flushed and fsynced); a retryable one is not kept."""
        key = str(entry["key"])
        if key in self.pairs:
            raise ValueError(f"pair {key} already decided in {self.pairs_path}")
        if self._pairs_fh is None:
            self._pairs_fh = self.pairs_path.open("a", encoding="utf-8")
        self._pairs_fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._pairs_fh.flush()
        if self.fsync:
            os.fsync(self._pairs_fh.fileno())
        if entry.get("error_kind") not in RETRYABLE:
            self.pairs[key] = entry

    def write_tickets(self, records: Iterable[dict[str, Any]]) -> int:
        """Write the tickets not written yet; how many were written."""
        recs = list(records)
        if self.format in (".csv", ".parquet"):
            self._write_table(recs)
            return len(recs)
        n = 0
        with self.path.open("a", encoding="utf-8") as fh:
            for rec in recs:
                if ticket_key(rec) in self.tickets_done:
                    continue
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self.tickets_done.add(ticket_key(rec))
                n += 1
                if self.fsync and n % 256 == 0:
                    fh.flush()
                    os.fsync(fh.fileno())
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        return n

    def _write_table(self, recs: list[dict[str, Any]]) -> None:
        columns = {
            "id": [r["id"] for r in recs],
            "group": [r["group"] for r in recs],
            "n_matches": [len(r["matches"]) for r in recs],
            "matches": [json.dumps(r["matches"], ensure_ascii=False) for r in recs],
            "error": [r.get("error") for r in recs],
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        if self.format == ".csv":
            import csv

            with tmp.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(list(columns))
                w.writerows(zip(*columns.values(), strict=True))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(columns), tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._pairs_fh is not None:
            self._pairs_fh.close()
            self._pairs_fh = None
        self._lock.release()

    def __enter__(self) -> MatchOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
