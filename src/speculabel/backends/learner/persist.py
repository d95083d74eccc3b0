"""A learning worker's directory: what it learnt, kept so that a rerun continues from it.

Files: ``meta.json`` (settings, labels, how many it was trained on), ``examples.jsonl`` (every
label, appended as it arrives), ``embeddings.npz`` (the embedding cache) and ``head.npz`` (the
fitted head: its fitted arrays, and its class and parameters as JSON text).  Nothing here is
pickled: every ``.npz`` is read with ``allow_pickle=False``, so loading a directory someone shared
runs none of their code.  A ``model.pkl`` that older versions wrote is refused, saying how to fit
the worker again.  Every file but the append-only log is replaced atomically; a torn last line of
the log (a killed run) is cut before anything is appended after it.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.backends.base import BackendError

FORMAT = 1
HEAD_FORMAT = 1
HEAD_FILE = "head.npz"
LEGACY_HEAD = "model.pkl"
_META_KEY = "__meta__"


class LearnerDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._checked_tail = False

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create the learner directory {self.path}: {e}") from e

    def _replace(self, name: str, data: bytes) -> None:
        self._mkdir()
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.path / name)

    # .................................................................. meta
    def read_meta(self) -> dict[str, Any] | None:
        p = self.path / "meta.json"
        if not p.exists():
            return None
        try:
            meta: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BackendError(f"{p}: unreadable learner metadata ({e})") from e
        if meta.get("format") != FORMAT:
            raise BackendError(f"{self.path}: learner format {meta.get('format')}, expected {FORMAT}")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        self._replace("meta.json", json.dumps({"format": FORMAT, **meta}, indent=2).encode())

    # .................................................................. examples
    def has_examples(self) -> bool:
        return (self.path / "examples.jsonl").exists()

    def read_examples(self) -> list[dict[str, Any]]:
        p = self.path / "examples.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line after a crash (cut before the next append)
        return out

    def append_examples(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._mkdir()
        p = self.path / "examples.jsonl"
        if not self._checked_tail and p.exists():
            data = p.read_bytes()
            if data and not data.endswith(b"\n"):
                with p.open("r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)
        self._checked_tail = True
        with p.open("a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def replace_examples(self, rows: list[dict[str, Any]]) -> None:
        """The whole log at once (a worker fitted anew), replaced atomically."""
        self._replace("examples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                for r in rows).encode("utf-8"))
        self._checked_tail = True

    # .................................................................. embeddings, model
    def read_embeddings(self) -> dict[str, np.ndarray]:
        p = self.path / "embeddings.npz"
        if not p.exists():
            return {}
        return read_embeddings(p)

    def write_embeddings(self, cache: dict[str, np.ndarray]) -> None:
        if not cache:
            return
        self._mkdir()
        keys = sorted(cache)
        tmp = self.path / f".embeddings.{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([cache[k] for k in keys]))
        tmp.replace(self.path / "embeddings.npz")

    # .................................................................. the fitted head
    def read_model(self, new_head: Callable[[], Any],
                   others: Mapping[str, Callable[[], Any]] | None = None) -> Any:
        """The saved head, rebuilt as ``new_head()`` (or as ``others[its class name]()``) with
        the saved parameters and fitted arrays; None when none was saved.  A pickled head
        (older versions) is refused, never loaded."""
        p = self.path / HEAD_FILE
        if not p.exists():
            if (self.path / LEGACY_HEAD).exists():
                raise BackendError(legacy_message(self.path))
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z[_META_KEY][()]))
                arrays = {name: z[name] for name in meta["arrays"]}
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise BackendError(f"{p}: not a learner head written by speculabel ({e}); "
                               f"delete {self.path} and fit the worker again") from e
        return rebuild_head(p, meta, arrays, (others or {}).get(str(meta.get("class")), new_head))

    def write_model(self, model: Any) -> None:
        if model is None:
            return
        arrays, meta = head_state(model)
        self._mkdir()
        tmp = self.path / f".head.{os.getpid()}.tmp.npz"
        payload: dict[str, Any] = {_META_KEY: np.array(json.dumps(meta)), **arrays}
        np.savez(tmp, **payload)  # no object arrays (head_state refuses them): nothing pickled
        tmp.replace(self.path / HEAD_FILE)


def read_embeddings(path: Path) -> dict[str, np.ndarray]:
    """An ``embeddings.npz`` as {text key: vector} (read without unpickling anything)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {str(k): v for k, v in zip(z["keys"], z["vectors"], strict=True)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise BackendError(f"{path}: not an embedding cache written by speculabel ({e})") from e


def legacy_message(folder: Path) -> str:
    return (f"{folder / LEGACY_HEAD}: this learner head was saved with pickle by an older "
            "speculabel and is not loaded (unpickling a file can run any code in it). Fit it "
            "again: for a worker shipped by calibrate, run the same `speculabel calibrate ...` "
            f"command again; for a classify run's learner, delete the folder {folder} (the worker "
            "learns again from the judge on the next run)")


def _class_name(model: Any) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def head_state(model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A fitted scikit-learn head as (fitted arrays, JSON metadata): its class, its parameters
    and its fitted scalars.  Anything else (an object array, a nested estimator) is refused."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for name, value in vars(model).items():
        if not name.endswith("_") or name.startswith("_"):
            continue  # parameters and private state; fitted attributes end with "_"
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[name] = value
        elif isinstance(value, bool | int | float | str | np.integer | np.floating) or value is None:
            scalars[name] = value.item() if isinstance(value, np.generic) else value
        else:
            raise BackendError(f"cannot store the fitted {type(model).__name__}: its attribute "
                               f"{name} is a {type(value).__name__}, not an array or a number")
    params = {k: v for k, v in model.get_params(deep=False).items() if _plain(v)}
    return arrays, {"format": HEAD_FORMAT, "class": _class_name(model), "params": params,
                    "scalars": scalars, "arrays": sorted(arrays)}


def _plain(value: Any) -> bool:
    """JSON that reads back as the same value (so a parameter survives the round trip)."""
    try:
        return bool(json.loads(json.dumps(value)) == value)
    except (TypeError, ValueError):
        return False


def rebuild_head(where: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                 new_head: Callable[[], Any]) -> Any:
    """``new_head()`` given the saved parameters and fitted state (see :func:`head_state`)."""
    head = new_head()
    if meta.get("format") != HEAD_FORMAT:
        raise BackendError(f"{where}: head format {meta.get('format')}, expected {HEAD_FORMAT}")
    if meta.get("class") != _class_name(head):
        raise BackendError(f"{where} holds a {meta.get('class')} head; this worker fits "
                           f"{_class_name(head)}: delete {where.parent} and fit it again")
    known = head.get_params(deep=False)
    head.set_params(**{k: v for k, v in dict(meta.get("params", {})).items() if k in known})
    for name, value in {**dict(meta.get("scalars", {})), **arrays}.items():
        if not name.endswith("_") or name.startswith("_"):
            raise BackendError(f"{where}: {name!r} is not a fitted attribute")
        setattr(head, name, value)
    return head
