"""The Ray engine's results directory: the run's manifest and record shards, written so that a
killed driver, a retried task or a restarted actor never leaves an item with two records.

Layout of ``OUT/``::

    _speculabel.manifest          JSON: {"speculabel": "results", "layout": "shards", "runs": [...]}
    part-<hash>.jsonl             records, one JSON line each (or part-<hash>.parquet)

Each ``runs`` entry is the header the single-process results file starts with (settings that
decide labels, the input, their fingerprint); every record carries that fingerprint as ``run``,
in the same schema as the single-process run (``row`` is absent: Ray reads the input in parallel
blocks, so the id is the key).  The rules of :mod:`speculabel.io.results` hold here too: a path
that is a file, or a non-empty directory without our manifest, is refused untouched; a run with
other settings or another input is refused unless explicitly allowed.

Why writes are idempotent:

* a shard's name is a hash of the sorted ids it holds, so the same batch written twice (a Ray
  task retried after its worker died, an actor restarted, lineage reconstruction: Ray re-runs a
  task on the same input block) lands on the same name and replaces it instead of adding to it;
* a shard appears whole or not at all: on a local or shared filesystem it is written to a
  hidden temporary file, fsynced and renamed; on an object store a PUT is atomic by itself.
  Temporaries left by a killed run are removed when the next run starts;
* a rerun reads every id in the shards first and never sends those items into the pipeline,
  so its shards hold other ids;
* the one race left (a task of a killed driver finishing its rename while the rerun starts) is
  repaired by :meth:`ShardDir.dedupe` at the start and end of every run: an id found in two
  shards keeps the record of the first shard in name order, the later shard is rewritten
  without it (new name, then the old one removed).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from speculabel.io.results import FORMAT, KIND, ResultsError, RunInfo
from speculabel.records import Record

MANIFEST = "_speculabel.manifest"
LAYOUT = "shards"
PREFIX = "part-"
SUFFIXES = (".jsonl", ".parquet")


# ---------------------------------------------------------------------- filesystems
def open_fs(out: str) -> tuple[Any, str]:
    """A pyarrow filesystem and the path in it: local paths as they are, URIs (s3://, gs://,
    hdfs://, file://) through pyarrow."""
    from pyarrow import fs as pafs

    if "://" in out:
        filesystem, path = pafs.FileSystem.from_uri(out)
        return filesystem, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(out))


def _is_local(filesystem: Any) -> bool:
    from pyarrow import fs as pafs

    return isinstance(filesystem, pafs.LocalFileSystem)


def _write_bytes(filesystem: Any, path: str, data: bytes) -> None:
    """Whole or nothing: temp file + fsync + rename locally; one PUT on an object store."""
    if _is_local(filesystem):
        head, name = os.path.split(path)
        tmp = os.path.join(head, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return
    with filesystem.open_output_stream(path) as fh:
        fh.write(data)


def _read_bytes(filesystem: Any, path: str) -> bytes:
    with filesystem.open_input_stream(path) as fh:
        data: bytes = fh.read()
    return data


def _join(base: str, name: str) -> str:
    return f"{base}/{name}"


# ---------------------------------------------------------------------- records <-> shards
def shard_name(ids: Iterable[str], fmt: str) -> str:
    """``part-<hash of the sorted ids>.<fmt>``: the same records always get the same name."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:24]
    return f"{PREFIX}{digest}.{fmt}"


def _schema() -> Any:
    import pyarrow as pa

    vote = pa.struct([
        ("model", pa.string()), ("label", pa.string()),
        ("probs", pa.map_(pa.string(), pa.float64())), ("latency_s", pa.float64()),
        ("method", pa.string()), ("error", pa.string()), ("truncated", pa.bool_()),
        ("cached", pa.bool_()), ("retryable", pa.bool_()),
    ])
    return pa.schema([
        ("id", pa.string()), ("label", pa.string()), ("decided_by", pa.string()),
        ("rule", pa.string()), ("votes", pa.list_(vote)), ("judge_vote", vote),
        ("latency_s", pa.float64()), ("truncated", pa.bool_()), ("error", pa.string()),
        ("error_kind", pa.string()), ("row", pa.int64()), ("run", pa.string()),
    ])


def records_table(records: Sequence[dict[str, Any]]) -> Any:
    """Records (``Record.to_json`` dicts) as a pyarrow table in the record schema."""
    import pyarrow as pa

    return pa.Table.from_pylist([dict(r) for r in records], schema=_schema())


def table_records(table: Any) -> list[dict[str, Any]]:
    """Rows of a record-schema table back as ``Record.to_json`` dicts (maps as dicts, defaults
    dropped as ``to_json`` drops them)."""
    out = []
    for row in table.to_pylist():
        for vote in [*(row.get("votes") or []), row.get("judge_vote")]:
            if vote is None:
                continue
            vote["probs"] = dict(vote.get("probs") or [])
            for key in ("error", "truncated", "cached", "retryable"):
                if not vote.get(key):
                    vote.pop(key, None)
        for key in ("error_kind", "row", "run"):
            if row.get(key) is None:
                row.pop(key, None)
        out.append(row)
    return out


def encode_shard(records: Sequence[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(records_table(records), sink)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def decode_shard(data: bytes, fmt: str, where: str) -> list[dict[str, Any]]:
    try:
        if fmt == "jsonl":
            return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        import pyarrow as pa
        import pyarrow.parquet as pq

        return table_records(pq.read_table(pa.BufferReader(data)))
    except Exception as e:  # a shard is written whole; a broken one was changed by hand
        raise ResultsError(f"{where}: not a readable shard of records ({e}); move it away") from e


def write_shard(out: str, records: Sequence[dict[str, Any]], fmt: str) -> str:
    """Write one shard of records into ``out`` (idempotent: see the module docstring)."""
    filesystem, base = open_fs(out)
    name = shard_name([str(r["id"]) for r in records], fmt)
    _write_bytes(filesystem, _join(base, name), encode_shard(records, fmt))
    return name


# ---------------------------------------------------------------------- the directory
def _is_manifest(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("speculabel") == KIND and obj.get("layout") == LAYOUT


class ShardDir:
    """A results directory of shards, checked when made (nothing is written until :meth:`start`).

    ``done`` maps every id already recorded to its shard: a rerun skips those ids.
    """

    def __init__(self, out: str, run: RunInfo, *, allow_changed_run: bool = False) -> None:
        self.out = out
        self.run = run
        self.fs, self.base = open_fs(out)
        self._runs: list[dict[str, Any]] = []
        self._new_run = True
        self.done: dict[str, str] = {}
        self._check(allow_changed_run)
        self.duplicates = self._scan()

    @property
    def location(self) -> str:
        """Where tasks on any node write: the URI, or the absolute local path."""
        return self.out if "://" in self.out else self.base

    def _check(self, allow_changed_run: bool) -> None:
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.base)
        if info.type == pafs.FileType.NotFound:
            return
        if info.type != pafs.FileType.Directory:
            raise ResultsError(
                f"{self.out} is a file; --engine ray writes a directory of record shards (give a "
                "new directory name, e.g. out.ray/); the file was left untouched"
            )
        names = self._names()
        if MANIFEST not in names:
            if names:
                raise ResultsError(
                    f"{self.out} is a directory that is not a speculabel results directory (no "
                    f"{MANIFEST}), so it was left untouched; choose another output directory"
                )
            return
        where = _join(self.base, MANIFEST)
        try:
            manifest = json.loads(_read_bytes(self.fs, where).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ResultsError(f"{where} is not a speculabel manifest ({e}); the directory was "
                               "left untouched") from e
        if not _is_manifest(manifest) or not isinstance(manifest.get("runs"), list) \
                or not manifest["runs"]:
            raise ResultsError(f"{where} is not a speculabel manifest; the directory was left "
                               "untouched")
        self._runs = manifest["runs"]
        last = self._runs[-1]
        diff = self.run.differences(RunInfo(last.get("settings") or {}, last.get("input") or {}))
        if diff and not allow_changed_run:
            raise ResultsError(
                f"{self.out} holds results of other settings or another input: " + "; ".join(diff)
                + ". Use another output directory, or --allow-changed-run to add to it anyway "
                "(the records say which run made them)"
            )
        self._new_run = bool(diff)

    def _names(self) -> list[str]:
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return sorted(os.path.basename(i.path) for i in infos)

    def shards(self) -> list[str]:
        """Shard file names, in name order."""
        return [n for n in self._names() if n.startswith(PREFIX) and n.endswith(SUFFIXES)]

    def read_shard(self, name: str) -> list[dict[str, Any]]:
        where = _join(self.base, name)
        return decode_shard(_read_bytes(self.fs, where), name.rsplit(".", 1)[1], where)

    def _scan(self) -> int:
        """Fill ``done``; count ids found in more than one shard (see :meth:`dedupe`)."""
        self.done = {}
        dupes = 0
        for name in self.shards():
            for rec in self.read_shard(name):
                rid = str(rec["id"])
                if rid in self.done:
                    dupes += 1
                else:
                    self.done[rid] = name
        return dupes

    # ------------------------------------------------------------------ writing
    def start(self) -> None:
        """Create the directory and write the manifest (adding this run if it is new); remove the
        temporary files of killed runs; repair duplicates (see the module docstring)."""
        self.fs.create_dir(self.base, recursive=True)
        if self._new_run:
            self._runs = [*self._runs, self.run.header()]
            manifest = {"speculabel": KIND, "format": FORMAT, "layout": LAYOUT, "runs": self._runs}
            _write_bytes(self.fs, _join(self.base, MANIFEST),
                         (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
            self._new_run = False
        for name in self._names():
            if name.startswith(f".{PREFIX}") and name.endswith(".tmp"):
                self.fs.delete_file(_join(self.base, name))
        if self.duplicates:
            self.dedupe()

    def dedupe(self) -> int:
        """Keep one record per id (the first shard in name order wins); the number removed."""
        seen: set[str] = set()
        removed = 0
        for name in self.shards():
            records = self.read_shard(name)
            keep = [r for r in records if str(r["id"]) not in seen]
            seen.update(str(r["id"]) for r in records)
            if len(keep) == len(records):
                continue
            removed += len(records) - len(keep)
            if keep:
                fmt = name.rsplit(".", 1)[1]
                new = shard_name([str(r["id"]) for r in keep], fmt)
                _write_bytes(self.fs, _join(self.base, new), encode_shard(keep, fmt))
            self.fs.delete_file(_join(self.base, name))
        self.duplicates = self._scan()
        return removed

    def records(self) -> list[Record]:
        """Every record in the directory (shards in name order)."""
        return [Record.from_json(r) for name in self.shards() for r in self.read_shard(name)]


def read_records(out: str) -> list[Record]:
    """The records of a results directory, whatever run made them (for users and tests)."""
    return ShardDir(out, RunInfo(), allow_changed_run=True).records()
