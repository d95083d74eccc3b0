"""A worker that learns from the judge: MiniLM sentence embeddings + logistic regression.

Spec: ``learner:minilm`` (optionally ``learner:minilm@DIR`` to persist it in ``DIR``).

Why: the judge's answers are free training data.  Every item the cascade escalates comes back
with the judge's label; this worker embeds the item with all-MiniLM-L6-v2 (about 5 ms a text
on a CPU, 1/200 of a judge call) and fits a logistic-regression head on the judge's labels so
far.  It costs almost nothing per item, and as labels accumulate it agrees with the judge more
often, so more items can be decided without the judge.

Behaviour:

* It **abstains** (with the reason: how many labels of each class it has) until it has at least
  ``min_per_class`` labels of *every* label of the task; one-sided data would give a
  one-sided classifier.
* It **retrains** on all labels so far every ``retrain_every`` new labels (embeddings are cached,
  so a retrain only fits the head: milliseconds to a second).
* Its :meth:`fingerprint` names the number of labels it was trained on and a hash of them, so a
  vote store never hands back a vote of an older version; ``cacheable = False`` says the same
  to a cascade that asks.
* Pair tasks (two fields, e.g. ``text_a`` / ``text_b``): each text is embedded on its own and
  the features are ``[a + b, |a - b|, a * b]`` (symmetric in the two texts), ``pair_mode="sym"``;
  ``pair_mode="sep"`` embeds ``"text_a [SEP] text_b"`` as one text.  Measured on Banking77
  similar-ticket pairs (see the report), ``sym`` is clearly better.

Persistence (``directory``): ``meta.json`` (settings, labels, how many it was trained on),
``examples.jsonl`` (every judge label, appended as it arrives), ``embeddings.npz`` (the cache)
and ``model.pkl`` (the fitted head, pickled: load only directories you wrote).  A learner
re-created on the same directory continues where the last one stopped.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.backends.base import Backend, BackendError
from speculabel.backends.learner.embed import EmbedFn, MiniLMEmbedder, row_key, text_key
from speculabel.backends.learner.persist import LearnerDir
from speculabel.records import Item, Vote
from speculabel.tasks import Task

PAIR_MODES = ("sym", "sep")
Text = str | Sequence[str]


class LearnerBackend(Backend):
    """MiniLM + logistic regression trained on the judge's labels (see the module docs)."""

    cacheable = False  # its votes change as it learns: a vote store must not keep them

    def __init__(
        self,
        spec: str = "learner:minilm",
        *,
        directory: str | Path | None = None,
        min_per_class: int = 20,
        retrain_every: int = 50,
        pair_mode: str = "sym",
        C: float = 1.0,
        class_weight: str | None = None,
        embedder: EmbedFn | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        if pair_mode not in PAIR_MODES:
            raise BackendError(f"{spec}: pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
        if min_per_class < 1 or retrain_every < 1:
            raise BackendError(f"{spec}: min_per_class and retrain_every must be >= 1")
        self.spec = spec
        self.directory = Path(directory) if directory is not None else None
        self._dir = LearnerDir(self.directory) if self.directory is not None else None
        self.min_per_class = int(min_per_class)
        self.retrain_every = int(retrain_every)
        self.pair_mode = pair_mode
        self.C = float(C)
        self.class_weight = class_weight
        self._embed: EmbedFn = embedder if embedder is not None else MiniLMEmbedder()
        self.embedder_name = getattr(self._embed, "name", type(self._embed).__name__)
        self.labels: list[str] | None = list(labels) if labels else None
        self.fields: tuple[str, ...] | None = None
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
        if self.directory is not None:
            self._load()

    # ------------------------------------------------------------------ registry
    OPTIONS = ("directory", "min_per_class", "retrain_every", "pair_mode", "C", "class_weight",
               "embedder")

    @classmethod
    def check_spec(cls, spec: str, options: dict[str, Any], task: Task | None = None) -> None:
        """``learner:minilm`` or ``learner:minilm@DIR``, and options it knows."""
        kind, _, rest = spec.partition(":")
        name = rest.partition("@")[0]
        if kind != "learner" or name != "minilm":
            raise BackendError(f"unknown learner spec {spec!r}; use learner:minilm[@DIR]")
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise BackendError(f"{spec}: unknown option(s) {unknown}; known: {list(cls.OPTIONS)}")

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> LearnerBackend:
        """``learner:minilm[@DIR]`` with the options of :class:`LearnerBackend`."""
        cls.check_spec(spec, options)
        where = spec.partition("@")[2]
        if where and "directory" not in options:
            options["directory"] = where
        return cls(spec, **options)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        if self._model is None:
            return f"{self.spec}:{self.pair_mode}:untrained"
        return f"{self.spec}:{self.pair_mode}:n{self._trained_on}:{self._trained_digest}"

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
        """Enough labels of every class to vote."""
        counts = self.class_counts()
        return len(counts) >= 2 and all(c >= self.min_per_class for c in counts.values())

    def waiting_reason(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items()) or "none"
        return (
            f"{self.spec} is still learning: {self.n_labels} judge labels ({counts}); "
            f"it votes from {self.min_per_class} per class"
        )

    # ------------------------------------------------------------------ features
    def row_of(self, item: Item) -> tuple[str, ...]:
        """The item's texts in the task's field order (what the learner embeds)."""
        names = self.fields or tuple(item.fields)
        return tuple(str(item.fields.get(f, "")) for f in names)

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            first = {k: t for k, t in zip(keys, texts, strict=True)}
            vecs = self._embed([first[k] for k in todo])
            for k, v in zip(todo, vecs, strict=True):
                self._cache[k] = np.asarray(v, dtype=np.float32)
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, 0))

    def features(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """Feature matrix for rows of field values (one text, or a pair)."""
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        width = len(rows[0])
        if width == 2 and self.pair_mode == "sym":
            a = self._embed_texts([r[0] for r in rows])
            b = self._embed_texts([r[1] for r in rows])
            return np.hstack([a + b, np.abs(a - b), a * b])
        if width == 1:
            return self._embed_texts([r[0] for r in rows])
        return self._embed_texts([" [SEP] ".join(r) for r in rows])

    @staticmethod
    def _as_row(t: Text) -> tuple[str, ...]:
        return (t,) if isinstance(t, str) else tuple(t)

    # ------------------------------------------------------------------ sklearn-like API
    def fit(self, texts: Sequence[Text], labels: Sequence[str]) -> LearnerBackend:
        """Replace the training data with these examples and train now (any class counts)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        with self._lock:
            self._index, self._x_texts, self._y = {}, [], []
            for t, y in zip(texts, labels, strict=True):
                self._add(self._as_row(t), str(y))
            if self.labels is None:
                self.labels = sorted(set(self._y))
            self._train()
            self._save()
        return self

    def predict_proba(self, texts: Sequence[Text]) -> np.ndarray:
        """Probabilities in :attr:`labels` order (a label the head never saw gets 0)."""
        if self._model is None or self.labels is None:
            raise BackendError(f"{self.spec}: not trained yet ({self.waiting_reason()})")
        rows = [self._as_row(t) for t in texts]
        with self._lock:
            x = self.features(rows)
            p = self._model.predict_proba(x)
            out = np.zeros((len(rows), len(self.labels)))
            for j, cls in enumerate(self._model.classes_):
                if cls in self.labels:
                    out[:, self.labels.index(cls)] = p[:, j]
        return out

    def predict(self, texts: Sequence[Text]) -> list[str]:
        assert self.labels is not None
        p = self.predict_proba(texts)
        return [self.labels[int(i)] for i in p.argmax(axis=1)]

    # ------------------------------------------------------------------ learning from the judge
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

    def observe(self, items: Sequence[Item], judge_labels: Sequence[str | None]) -> bool:
        """Take the judge's labels for these items; retrain when due.  True if it retrained."""
        if len(items) != len(judge_labels):
            raise ValueError(f"{len(items)} items but {len(judge_labels)} labels")
        with self._lock:
            fresh = []
            for item, lab in zip(items, judge_labels, strict=True):
                if lab is None:
                    continue
                if self.labels is not None and lab not in self.labels:
                    raise BackendError(f"{self.spec}: label {lab!r} is not one of {self.labels}")
                row = self.row_of(item)
                if self._add(row, lab):
                    self._since_train += 1
                    fresh.extend(self._example_rows([row], [lab]))
            if self._dir is not None:
                self._dir.append_examples(fresh)
            due = self._model is None or self._since_train >= self.retrain_every
            if due and self.ready():
                self._train()
                self._save()
                return True
            return False

    def _new_head(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=2000, class_weight=self.class_weight)

    def cross_val_proba(self, rows: Sequence[Sequence[str]], labels: Sequence[str],
                        folds: int = 5, seed: int = 0) -> np.ndarray:
        """Out-of-fold probabilities (in :attr:`labels` order) of a head like this one's, each
        row scored by a head fitted on the other folds: honest scores for items the learner
        was trained on (a certificate must never use in-sample scores)."""
        from sklearn.model_selection import StratifiedKFold

        assert self.labels is not None
        x = self.features(rows)
        y = np.array(labels)
        out = np.full((len(y), len(self.labels)), 1.0 / len(self.labels))
        n_splits = min(folds, *np.unique(y, return_counts=True)[1]) if len(y) else 0
        if n_splits < 2:
            return out
        for tr, te in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y):
            if len(set(y[tr])) < 2:
                continue
            head = self._new_head().fit(x[tr], y[tr])
            p = head.predict_proba(x[te])
            for j, cls in enumerate(head.classes_):
                out[te, self.labels.index(cls)] = p[:, j]
        return out

    def _train(self) -> None:
        if len(set(self._y)) < 2:
            raise BackendError(f"{self.spec}: needs labels of at least two classes to train")
        x = self.features(self._x_texts)
        model = self._new_head()
        model.fit(x, np.array(self._y))
        self._model = model
        self._trained_on = len(self._y)
        digest = hashlib.sha256()
        for row, y in zip(self._x_texts, self._y, strict=True):
            digest.update(row_key(row).encode())
            digest.update(y.encode())
        self._trained_digest = digest.hexdigest()[:12]
        self._since_train = 0
        self.retrains += 1

    # ------------------------------------------------------------------ the Backend interface
    def _bind(self, task: Task) -> None:
        if self.labels is None:
            self.labels = list(task.label_names)
        elif set(self.labels) != set(task.label_names):
            where = f" in {self.directory}" if self.directory else ""
            raise BackendError(
                f"{self.spec}: trained for labels {self.labels}{where}, but task {task.name!r} "
                f"has {task.label_names}; use another directory"
            )
        self.fields = tuple(task.fields)

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        with self._lock:
            self._bind(task)
            if not items:
                return []
            if self._model is None or not self.ready():
                reason = self.waiting_reason()
                return [Vote.abstain(self.spec, reason, method="classifier") for _ in items]
            t0 = time.perf_counter()
            probs = self.predict_proba([self.row_of(it) for it in items])
            dt = (time.perf_counter() - t0) / len(items)
            assert self.labels is not None
            return [
                Vote.from_probs(
                    self.spec,
                    {lab: float(p[j]) for j, lab in enumerate(self.labels)},
                    latency_s=dt,
                    method="classifier",
                )
                for p in probs
            ]

    def close(self) -> None:
        with self._lock:
            self._save()

    # ------------------------------------------------------------------ persistence
    def preload_embeddings(self, path: str | Path) -> int:
        """Add the embeddings cached in another learner's ``embeddings.npz`` (same embedder);
        returns how many were new.  Saves recomputing them, e.g. in benchmarks."""
        with np.load(Path(path)) as z:
            new = {str(k): v for k, v in zip(z["keys"], z["vectors"], strict=True)
                   if str(k) not in self._cache}
        self._cache.update(new)
        return len(new)

    def _meta(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "embedder": self.embedder_name,
            "pair_mode": self.pair_mode,
            "labels": self.labels,
            "fields": list(self.fields) if self.fields else None,
            "min_per_class": self.min_per_class,
            "retrain_every": self.retrain_every,
            "C": self.C,
            "n_labels": self.n_labels,
            "trained_on": self._trained_on,
            "trained_digest": self._trained_digest,
            "class_counts": self.class_counts(),
        }

    def _example_rows(self, rows: Sequence[tuple[str, ...]], labels: Sequence[str]
                      ) -> list[dict[str, Any]]:
        return [{"key": row_key(r), "fields": list(r), "label": y}
                for r, y in zip(rows, labels, strict=True)]

    def _save(self) -> None:
        if self._dir is None:
            return
        if not self._dir.has_examples() and self._y:  # fit() replaced the data: write it whole
            self._dir.append_examples(self._example_rows(self._x_texts, self._y))
        self._dir.write_meta(self._meta())
        self._dir.write_embeddings(self._cache)
        self._dir.write_model(self._model)

    def _load(self) -> None:
        assert self._dir is not None
        meta = self._dir.read_meta()
        if meta is None:
            return
        if meta.get("embedder") != self.embedder_name or meta.get("pair_mode") != self.pair_mode:
            raise BackendError(
                f"{self.directory}: this learner was built with {meta.get('embedder')} / "
                f"pair_mode {meta.get('pair_mode')}, not {self.embedder_name} / {self.pair_mode}"
            )
        self.labels = meta.get("labels") or self.labels
        self.fields = tuple(meta["fields"]) if meta.get("fields") else None
        for row in self._dir.read_examples():
            self._add(tuple(row["fields"]), str(row["label"]))
        self._cache = self._dir.read_embeddings()
        self._model = self._dir.read_model()
        if self._model is not None:
            self._trained_on = int(meta.get("trained_on", 0))
            self._trained_digest = str(meta.get("trained_digest", ""))
        self._since_train = max(0, self.n_labels - self._trained_on)


def from_spec(spec: str, **options: Any) -> LearnerBackend:
    """The registry's factory (kept as a function for callers that import it)."""
    return LearnerBackend.from_spec(spec, **options)
