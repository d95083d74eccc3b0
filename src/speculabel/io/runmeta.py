"""What made a results file: the run's settings and input, kept in a sidecar ``OUT.meta.json``.

Why a sidecar: the results file holds records and nothing else (one JSON object per line), so
pandas, polars, duckdb and ``jq`` read it as it is.  The sidecar lists every run that wrote to
the file (settings, input, fingerprint); each record names its run by that fingerprint.  It is
replaced atomically (written to a temporary file, fsynced, renamed), so it is never torn.

Files written before the sidecar (format 1) carry the same information as header lines
``{"speculabel": "results", ...}`` among the records; :func:`is_header` finds them so that the
results file can move them into the sidecar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speculabel.errors import SpeculabelError
from speculabel.io.tables import InputError

#: the results-file format: 1 had header lines in the file, 2 keeps them in OUT.meta.json
FORMAT = 1
META_FORMAT = 2
KIND = "results"
#: the keys every record has (a line without them is not a record of ours)
RECORD_KEYS = frozenset({"id", "label", "decided_by"})


class ResultsError(InputError, SpeculabelError):
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

    @property
    def empty(self) -> bool:
        return not (self.settings or self.input)

    def header(self) -> dict[str, Any]:
        return {"speculabel": KIND, "format": FORMAT, "run": self.fingerprint,
                "settings": self.settings, "input": self.input}

    def to_json(self) -> dict[str, Any]:
        return {"run": self.fingerprint, "settings": self.settings, "input": self.input}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunInfo:
        return cls(obj.get("settings") or {}, obj.get("input") or {})

    def differences(self, other: RunInfo) -> list[str]:
        """What differs, as ``key: then X, now Y`` lines (``other`` is the earlier run)."""
        out = []
        for part, now, then in (("", self.settings, other.settings),
                                ("input ", self.input, other.input)):
            for key in sorted(set(now) | set(then)):
                if now.get(key) != then.get(key):
                    out.append(f"{part}{key}: then {then.get(key)!r}, now {now.get(key)!r}")
        return out


def is_header(obj: Any) -> bool:
    """A format-1 header line (``{"speculabel": "results", ...}``)."""
    return isinstance(obj, dict) and obj.get("speculabel") == KIND


def is_record(obj: Any) -> bool:
    """A line of ours: a JSON object with every key a record has."""
    return isinstance(obj, dict) and obj.keys() >= RECORD_KEYS


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def read_meta(path: Path) -> list[RunInfo] | None:
    """The runs listed in the sidecar, oldest first; ``None`` when there is no sidecar."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path} (the settings of its results file) cannot be read ({e}); "
                           "move it away and rerun, or choose another output file") from e
    if not is_header(data) or not isinstance(data.get("runs"), list):
        raise ResultsError(f"{path} is not a speculabel settings file; it was left untouched; "
                           "choose another output file")
    return [RunInfo.from_json(r) for r in data["runs"] if isinstance(r, dict)]


def write_meta(path: Path, runs: list[RunInfo], records: str, table: str | None) -> None:
    """Replace the sidecar atomically: temporary file, fsync, rename, fsync of the folder."""
    body = {"speculabel": KIND, "format": META_FORMAT, "records": records, "table": table,
            "runs": [r.to_json() for r in runs]}
    atomic_write(path, (json.dumps(body, indent=1, default=str) + "\n").encode("utf-8"))


def atomic_write(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, never a mix (OSError on failure)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
