"""A learning worker's directory: what it learnt, kept so that a rerun continues from it.

Files: ``meta.json`` (settings, labels, how many it was trained on), ``examples.jsonl`` (every
label, appended as it arrives), ``embeddings.npz`` (the embedding cache) and ``model.pkl`` (the
fitted head, pickled: load only directories you wrote).  Every file but the append-only log is
replaced atomically; a torn last line of the log (a killed run) is cut before anything is
appended after it.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.backends.base import BackendError

FORMAT = 1


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
        with np.load(p) as z:
            return {str(k): v for k, v in zip(z["keys"], z["vectors"], strict=True)}

    def write_embeddings(self, cache: dict[str, np.ndarray]) -> None:
        if not cache:
            return
        self._mkdir()
        keys = sorted(cache)
        tmp = self.path / f".embeddings.{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([cache[k] for k in keys]))
        tmp.replace(self.path / "embeddings.npz")

    def read_model(self) -> Any:
        p = self.path / "model.pkl"
        if not p.exists():
            return None
        with p.open("rb") as f:
            return pickle.load(f)

    def write_model(self, model: Any) -> None:
        if model is not None:
            self._replace("model.pkl", pickle.dumps(model))
