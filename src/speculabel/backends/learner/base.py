"""What every learning worker shares: labelled examples, an embedding cache, a small fitted head,
retraining as labels arrive, and a directory that keeps all of it between runs (what is written
and read back: :mod:`.stored`).

A learning worker:

* **abstains** (saying how many labels of each class it has) until it has ``min_per_class``
  labels of *every* label of the task: one-sided data would give a one-sided classifier;
* **retrains** on all labels so far every ``retrain_every`` new labels (embeddings are cached,
  so a retrain only fits the head: milliseconds);
* is **frozen** when ``frozen=True``: it takes no new labels, so its votes stay exactly those of
  the state it was loaded with (what ``calibrate`` certified a threshold for);
* names in its :meth:`fingerprint` how many labels it was trained on and a hash of them, and is
  never cached in a vote store (``cacheable = False``): its votes change as it learns.

Subclasses say how rows of texts become features (:meth:`LearningWorker.features`) and which head
is fitted (:meth:`LearningWorker.new_head`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from speculabel.backends.base import Backend, BackendError
from speculabel.backends.learner.embed import EmbedFn, row_key, shared_embedder, text_key
from speculabel.backends.learner.persist import LearnerDir
from speculabel.backends.learner.stored import StoredState
from speculabel.records import Item, Vote
from speculabel.tasks import Task

Text = str | Sequence[str]


@dataclass(frozen=True)
class Head:
    """A fitted head and what it was fitted on (how many labels, a hash of them)."""

    model: Any
    trained_on: int
    digest: str


class LearningWorker(StoredState, Backend):
    """Embeddings + a fitted head, learning from labels (see the module docstring)."""

    cacheable = False  # its votes change as it learns: a vote store must not keep them
    batch_hint = 256  # embeddings in large batches
    #: the spec's kind (``KIND:EMBEDDER``, the embedders of :mod:`.weights`)
    KIND: ClassVar[str] = ""
    OPTIONS: ClassVar[tuple[str, ...]] = ("directory", "min_per_class", "retrain_every",
                                          "frozen", "embedder")
    #: settings chosen once for every next fit (:meth:`pin_settings`); None: each fit chooses
    pinned: Any = None

    def __init__(
        self,
        spec: str,
        *,
        directory: str | Path | None = None,
        min_per_class: int = 8,
        retrain_every: int = 25,
        frozen: bool = False,
        embedder: EmbedFn | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        if min_per_class < 1 or retrain_every < 1:
            raise BackendError(f"{spec}: min_per_class and retrain_every must be >= 1")
        self.spec = spec
        self.directory = Path(directory) if directory is not None else None
        self._dir = LearnerDir(self.directory) if self.directory is not None else None
        if frozen and (self._dir is None or self._dir.read_meta() is None):
            raise BackendError(f"{spec}: frozen=true needs the directory of a fitted worker "
                               f"(written by speculabel calibrate); {self.directory} has none")
        self.min_per_class = int(min_per_class)
        self.retrain_every = int(retrain_every)
        self.frozen = bool(frozen)
        #: retrain by itself as labels arrive (False: an adaptive run decides when, see
        #: :meth:`candidate` and :meth:`install`)
        self.auto_retrain = True
        model = spec.partition(":")[2].partition("@")[0] or "minilm"
        self._embed: EmbedFn = embedder if embedder is not None else shared_embedder(model=model)
        self.embedder_name = getattr(self._embed, "name", type(self._embed).__name__)
        self.labels: list[str] | None = list(labels) if labels else None
        self.fields: tuple[str, ...] | None = None
        self.task_fingerprint: str | None = None
        self._lock = threading.RLock()
        # training data: unique by key, the latest label wins
        self._index: dict[str, int] = {}
        self._x_texts: list[tuple[str, ...]] = []
        self._y: list[str] = []
        self._cache: dict[str, np.ndarray] = {}
        self._model: Any = None
        self._trained_on = 0
        self._trained_digest = ""
        self._since_train = 0
        self.retrains = 0
        self._explicit = False  # fitted by fit(): votes whatever the class counts
        if self._dir is not None:
            self._load()

    # ------------------------------------------------------------------ registry
    @classmethod
    def check_spec(cls, spec: str, options: dict[str, Any], task: Task | None = None) -> None:
        from speculabel.backends.learner.weights import EMBEDDERS, missing

        kind, _, rest = spec.partition(":")
        model = rest.partition("@")[0]
        if kind != cls.KIND or model not in EMBEDDERS:
            names = "|".join(EMBEDDERS)
            raise BackendError(f"unknown {cls.KIND} spec {spec!r}; use {cls.KIND}:{{{names}}}[@DIR]")
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise BackendError(f"{spec}: unknown option(s) {unknown}; known: {list(cls.OPTIONS)}")
        problem = None if options.get("embedder") is not None else missing(model)
        if problem:
            raise BackendError(f"{spec}: {problem}")

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> LearningWorker:
        """``KIND:EMBEDDER[@DIR]`` (``minilm``, ``mpnet``) with the options of the class."""
        cls.check_spec(spec, options)
        where = spec.partition("@")[2]
        if where and "directory" not in options:
            options["directory"] = where
        return cls(spec, **options)

    # ------------------------------------------------------------------ what subclasses say
    @abstractmethod
    def features(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """The feature matrix of rows of field values."""

    @abstractmethod
    def new_head(self) -> Any:
        """An unfitted scikit-learn classifier with ``predict_proba``."""

    def pin_settings(self, rows: Sequence[Sequence[str]] | None, labels: Sequence[str] = ()
                     ) -> None:
        """Choose the settings a fit would choose from these labelled rows and keep them for
        the next fits (``calibrate`` tunes once, on items every candidate fit share holds);
        ``rows=None`` drops them (each fit chooses again).  A worker with nothing to choose
        ignores it."""

    def other_heads(self) -> dict[str, Any]:
        """Factories of other head classes a saved directory may hold, by class name (heads
        that earlier versions fitted); :meth:`new_head` is the default."""
        return {}

    def fit_model(self, x: np.ndarray, y: np.ndarray) -> Any:
        """A head fitted on ``(x, y)`` (subclasses may choose its settings from the data)."""
        return self.new_head().fit(x, y)

    def settings(self) -> dict[str, Any]:
        """What must match for a saved state to be loaded (embedder, feature settings)."""
        return {"embedder": self.embedder_name}

    # ------------------------------------------------------------------ identity and state
    def fingerprint(self) -> str:
        if self._model is None:
            return f"{self.spec}:untrained"
        return f"{self.spec}:n{self._trained_on}:{self._trained_digest}"

    @property
    def n_labels(self) -> int:
        return len(self._y)

    @property
    def trained_on(self) -> int:
        return self._trained_on

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self._y)
        names = self.labels or sorted(counts)
        return {lab: counts.get(lab, 0) for lab in names}

    def ready(self) -> bool:
        """A fitted head, and enough labels of every class (or a head fitted by :meth:`fit`)."""
        counts = self.class_counts()
        return self._model is not None and (self._explicit or (
            len(counts) >= 2 and all(c >= self.min_per_class for c in counts.values())))

    def unseen_labels(self) -> list[str]:
        """Labels with no training example: the head gives them probability 0, never votes them."""
        return [lab for lab, c in self.class_counts().items() if c == 0]

    def waiting_reason(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items()) or "none"
        return (f"{self.spec} is still learning: {self.n_labels} labels ({counts}); "
                f"it votes from {self.min_per_class} per class")

    # ------------------------------------------------------------------ features
    def row_of(self, item: Item) -> tuple[str, ...]:
        """The item's texts in the task's field order (what the worker embeds)."""
        names = self.fields or tuple(item.fields)
        return tuple(str(item.fields.get(f, "")) for f in names)

    def forget_cache(self) -> None:
        """Drop the embedding caches, the worker's and its embedder's (a timed run starts
        cold; see ``Memoising``)."""
        self._cache = {}
        forget = getattr(self._embed, "forget", None)
        if callable(forget):
            forget()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, each text embedded once (cached, and kept in the directory)."""
        keys = [text_key(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            first = {k: t for k, t in zip(keys, texts, strict=True)}
            vecs = self._embed([first[k] for k in todo])
            for k, v in zip(todo, vecs, strict=True):
                self._cache[k] = np.asarray(v, dtype=np.float32)
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, 0))

    @staticmethod
    def _as_row(t: Text) -> tuple[str, ...]:
        return (t,) if isinstance(t, str) else tuple(t)

    # ------------------------------------------------------------------ sklearn-like API
    def fit(self, texts: Sequence[Text], labels: Sequence[str]) -> LearningWorker:
        """Replace the training data with these examples and train now (any class counts)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        with self._lock:
            self._index, self._x_texts, self._y = {}, [], []
            for t, y in zip(texts, labels, strict=True):
                self._add(self._as_row(t), str(y))
            if self.labels is None:
                self.labels = sorted(set(self._y))
            self._explicit = True
            self._train()
            self._save(rewrite=True)
        return self

    def predict_proba(self, texts: Sequence[Text]) -> np.ndarray:
        """Probabilities in :attr:`labels` order (a label the head never saw gets 0)."""
        if self._model is None or self.labels is None:
            raise BackendError(f"{self.spec}: not trained yet ({self.waiting_reason()})")
        rows = [self._as_row(t) for t in texts]
        with self._lock:
            return self._proba(self._model, self.features(rows))

    def _proba(self, head: Any, x: np.ndarray) -> np.ndarray:
        assert self.labels is not None
        p = head.predict_proba(x)
        out = np.zeros((len(x), len(self.labels)))
        for j, cls in enumerate(head.classes_):
            if cls in self.labels:
                out[:, self.labels.index(cls)] = p[:, j]
        return out

    def predict(self, texts: Sequence[Text]) -> list[str]:
        assert self.labels is not None
        p = self.predict_proba(texts)
        return [self.labels[int(i)] for i in p.argmax(axis=1)]

    def head_proba(self, head: Any, x: np.ndarray) -> np.ndarray:
        """A head's probabilities for a feature matrix, in :attr:`labels` order."""
        return self._proba(head, x)

    # ------------------------------------------------------------------ learning
    def _add(self, row: tuple[str, ...], label: str) -> bool:
        k = row_key(row)
        if k in self._index:
            changed = self._y[self._index[k]] != label
            self._y[self._index[k]] = label
            return changed
        self._index[k] = len(self._y)
        self._x_texts.append(row)
        self._y.append(label)
        return True

    def observe(self, items: Sequence[Item], labels: Sequence[str | None]) -> bool:
        """Take labels for these items; retrain when due.  True if it retrained.  A frozen
        worker takes none."""
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels")
        if self.frozen:
            return False
        with self._lock:
            fresh = []
            for item, lab in zip(items, labels, strict=True):
                if lab is None:
                    continue
                if self.labels is not None and lab not in self.labels:
                    raise BackendError(f"{self.spec}: label {lab!r} is not one of {self.labels}")
                row = self.row_of(item)
                if self._add(row, lab):
                    self._since_train += 1
                    fresh.append({"key": row_key(row), "fields": list(row), "label": lab})
            if self._dir is not None:
                self._dir.append_examples(fresh)
            due = self._model is None or self._since_train >= self.retrain_every
            if self.auto_retrain and due and self.enough_labels():
                self._train()
                self._save()
                return True
            return False

    def enough_labels(self) -> bool:
        counts = self.class_counts()
        return len(counts) >= 2 and all(c >= self.min_per_class for c in counts.values())

    def candidate(self) -> Head | None:
        """A head fitted on every label so far, *not* installed: an adaptive run certifies it
        first (:meth:`install` puts it to work).  None until every class has enough labels."""
        return self._fit_head() if self.enough_labels() else None

    def _fit_head(self) -> Head:
        if len(set(self._y)) < 2:
            raise BackendError(f"{self.spec}: needs labels of at least two classes to train")
        with self._lock:
            model = self.fit_model(self.features(self._x_texts), np.array(self._y))
            digest = hashlib.sha256()
            for row, y in zip(self._x_texts, self._y, strict=True):
                digest.update(row_key(row).encode())
                digest.update(y.encode())
            return Head(model, len(self._y), digest.hexdigest()[:12])

    def candidate_proba(self, head: Head, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """What ``head`` would say about these rows (in :attr:`labels` order)."""
        with self._lock:
            return self._proba(head.model, self.features(rows))

    def install(self, head: Head, save: bool = True) -> None:
        """Vote with ``head`` from now on (and keep it in the directory)."""
        with self._lock:
            self._model = head.model
            self._trained_on, self._trained_digest = head.trained_on, head.digest
            self._since_train = max(0, self.n_labels - head.trained_on)
            self.retrains += 1
            if save:
                self._save()

    def _train(self) -> None:
        self.install(self._fit_head(), save=False)

    # ------------------------------------------------------------------ the Backend interface
    def check_task(self, task: Task) -> None:
        self._bind(task)

    def _bind(self, task: Task) -> None:
        where = f" in {self.directory}" if self.directory else ""
        if self.labels is None:
            self.labels = list(task.label_names)
        elif set(self.labels) != set(task.label_names):
            raise BackendError(
                f"{self.spec}: trained for labels {self.labels}{where}, but task {task.name!r} "
                f"has {task.label_names}; use another directory"
            )
        if self.fields is not None and self.fields != tuple(task.fields):
            raise BackendError(f"{self.spec}: trained on fields {list(self.fields)}{where}, but "
                               f"task {task.name!r} has {list(task.fields)}")
        self.fields = tuple(task.fields)

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        with self._lock:
            self._bind(task)
            if not items:
                return []
            if not self.ready():
                reason = self.waiting_reason()
                return [Vote.abstain(self.spec, reason, method="classifier") for _ in items]
            t0 = time.perf_counter()
            probs = self.predict_proba([self.row_of(it) for it in items])
            dt = (time.perf_counter() - t0) / len(items)
            assert self.labels is not None
            return [Vote.from_probs(self.spec, {lab: float(p[j]) for j, lab in
                                                enumerate(self.labels)},
                                    latency_s=dt, method="classifier") for p in probs]

    def close(self) -> None:
        with self._lock:
            if not self.frozen:
                self._save()
