"""``similarity:minilm``: are two texts about the same thing?  One number decides: the cosine.

Spec: ``similarity:minilm`` (optionally ``@DIR``).  For pair tasks with two labels ("similar
ticket"): both texts are embedded with all-MiniLM-L6-v2 and their cosine similarity is mapped to
a probability by a one-dimensional logistic regression fitted on labelled pairs.  One feature
means few labels suffice: it votes from ``min_per_class`` labels per class (8 by default) and
keeps learning as labels arrive.  Measured on Banking77 pairs: the cosine with one fitted
threshold is right on 86 % of unseen pairs, more than the qwen2.5-1.5b judge (80 %), at about
17 ms a pair (both texts embedded), under 1/50 of a judge call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speculabel.backends.base import BackendError
from speculabel.backends.learner.base import LearningWorker
from speculabel.tasks import Task


class SimilarityBackend(LearningWorker):
    """Cosine of the two texts' MiniLM embeddings -> P(label) by a fitted 1-D logistic."""

    KIND = "similarity"
    OPTIONS = (*LearningWorker.OPTIONS, "C")

    def __init__(self, spec: str = "similarity:minilm", *, C: float = 100.0, **kw: Any) -> None:
        self.C = float(C)
        super().__init__(spec, **kw)

    @classmethod
    def check_spec(cls, spec: str, options: dict[str, Any], task: Task | None = None) -> None:
        """A pair task with two labels (the cosine of one text says nothing)."""
        super().check_spec(spec, options, task)
        if task is not None and (len(task.fields) != 2 or len(task.labels) != 2):
            raise BackendError(
                f"{spec}: the similarity worker scores pair tasks with two labels (two text "
                f"fields, e.g. similar / not similar); task {task.name!r} has fields "
                f"{list(task.fields)} and labels {task.label_names}"
            )

    def check_task(self, task: Task) -> None:
        self.check_spec(self.spec.partition("@")[0], {}, task)
        super().check_task(task)

    def features(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """One column: the cosine of the two texts (the embeddings have unit length)."""
        if not rows:
            return np.zeros((0, 1), dtype=np.float32)
        if len(rows[0]) != 2:
            raise BackendError(f"{self.spec}: rows of two texts expected, got {len(rows[0])}")
        a = self.embed([r[0] for r in rows])
        b = self.embed([r[1] for r in rows])
        return np.sum(a * b, axis=1, keepdims=True)

    def new_head(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=1000)
