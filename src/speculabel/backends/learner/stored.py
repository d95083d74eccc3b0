"""What a learning worker keeps in its directory (examples, settings, embeddings, the fitted
head) and reads back: what lets ``calibrate`` ship a fitted worker and a later run load it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from speculabel.backends.base import BackendError
from speculabel.backends.learner.embed import row_key
from speculabel.backends.learner.persist import LearnerDir, read_embeddings

if TYPE_CHECKING:
    import numpy as np


class StoredState:
    """Mixed into :class:`speculabel.backends.learner.base.LearningWorker` (its state lives
    there; the names below are what persistence reads and writes)."""

    spec: str
    directory: Path | None
    _dir: LearnerDir | None
    _cache: dict[str, np.ndarray]
    labels: list[str] | None
    fields: tuple[str, ...] | None
    min_per_class: int
    retrain_every: int
    _trained_on: int
    _trained_digest: str
    _since_train: int
    _explicit: bool
    _x_texts: list[tuple[str, ...]]
    _y: list[str]
    _model: Any
    #: a setting's value in a directory that does not name it (written by an older version)
    SETTING_DEFAULTS: ClassVar[dict[str, Any]] = {}

    if TYPE_CHECKING:  # provided by LearningWorker
        @property
        def n_labels(self) -> int: ...
        def settings(self) -> dict[str, Any]: ...
        def class_counts(self) -> dict[str, int]: ...
        def _add(self, row: tuple[str, ...], label: str) -> bool: ...
        def new_head(self) -> Any: ...
        def other_heads(self) -> dict[str, Any]: ...

    def preload_embeddings(self, path: str | Path) -> int:
        """Add the embeddings cached in another worker's ``embeddings.npz`` (same embedder);
        returns how many were new.  Saves recomputing them, e.g. in benchmarks."""
        new = {k: v for k, v in read_embeddings(Path(path)).items() if k not in self._cache}
        self._cache.update(new)
        return len(new)

    def save_to(self, directory: str | Path) -> Path:
        """Write this worker's whole state into ``directory`` (a fitted state to ship)."""
        self.directory = Path(directory)
        self._dir = LearnerDir(self.directory)
        self._save(rewrite=True)
        return self.directory

    def _meta(self) -> dict[str, Any]:
        return {
            "spec": self.spec.partition("@")[0],
            **self.settings(),
            "labels": self.labels,
            "fields": list(self.fields) if self.fields else None,
            "min_per_class": self.min_per_class,
            "retrain_every": self.retrain_every,
            "n_labels": self.n_labels,
            "trained_on": self._trained_on,
            "trained_digest": self._trained_digest,
            "class_counts": self.class_counts(),
            "explicit": self._explicit,
        }

    def _save(self, rewrite: bool = False) -> None:
        if self._dir is None:
            return
        if rewrite or (not self._dir.has_examples() and self._y):
            self._dir.replace_examples([{"key": row_key(r), "fields": list(r), "label": y}
                                        for r, y in zip(self._x_texts, self._y, strict=True)])
        self._dir.write_meta(self._meta())
        self._dir.write_embeddings(self._cache)
        self._dir.write_model(self._model)

    def _load(self) -> None:
        assert self._dir is not None
        meta = self._dir.read_meta()
        if meta is None:
            return
        kind = self.spec.partition("@")[0]
        if meta.get("spec", kind) != kind:
            raise BackendError(f"{self.directory} holds a {meta.get('spec')} worker, not {kind}")
        for key, want in self.settings().items():
            if meta.get(key, self.SETTING_DEFAULTS.get(key)) != want:
                raise BackendError(f"{self.directory}: this worker was built with {key} "
                                   f"{meta.get(key)!r}, not {want!r}")
        self.labels = meta.get("labels") or self.labels
        self._explicit = bool(meta.get("explicit", False))
        self.fields = tuple(meta["fields"]) if meta.get("fields") else None
        for row in self._dir.read_examples():
            self._add(tuple(row["fields"]), str(row["label"]))
        self._cache = self._dir.read_embeddings()
        self._model = self._dir.read_model(self.new_head, self.other_heads())
        if self._model is not None:
            self._trained_on = int(meta.get("trained_on", 0))
            self._trained_digest = str(meta.get("trained_digest", ""))
        self._since_train = max(0, self.n_labels - self._trained_on)
