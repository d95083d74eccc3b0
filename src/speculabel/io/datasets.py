"""The two real benchmark data sets of the paper's tasks, read from the shared data folder.

* :func:`tweeteval`: TweetEval sentiment (3 labels), the paper's sentiment task.
* :func:`banking77_pairs`: "similar ticket" pairs built from Banking77 queries: two queries are
  similar when they share an intent.  Half the pairs are similar, half not, and a quarter of the
  negatives are *hard*: their two intents' names share a word (``card_arrival`` /
  ``card_delivery_estimate``).  Built deterministically from a seed.

The data is never copied into the project: :func:`shared_data_dir` finds ``../shared/data``
(relative to the repository root or the working directory) or ``$SPECULABEL_DATA``, and says
which paths it tried when it cannot.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speculabel.errors import SpeculabelError
from speculabel.records import Item

ENV_VAR = "SPECULABEL_DATA"

TWEETEVAL_LABELS = ("negative", "neutral", "positive")  # mapping.txt: 0, 1, 2

# Words too common in intent names to make two intents look alike.
_STOP = frozenset({"a", "an", "and", "by", "for", "in", "of", "on", "or", "the", "to", "not", "is"})


class DataMissing(SpeculabelError, FileNotFoundError):
    """A data set is not where the project looks for it; the message names every path tried."""


@dataclass
class Labelled:
    """Items with their gold labels (same order), and where they came from."""

    name: str
    items: list[Item]
    gold: list[str]
    source: str
    info: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)


def _repo_root() -> Path:
    # src/speculabel/io/datasets.py -> repository root (for an editable install / a checkout)
    return Path(__file__).resolve().parents[3]


def candidate_data_dirs() -> list[Path]:
    """Where :func:`shared_data_dir` looks, in order."""
    out: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        out.append(Path(env).expanduser())
    out.append(_repo_root().parent / "shared" / "data")
    cwd = Path.cwd()
    out.append(cwd.parent / "shared" / "data")
    out.append(cwd / "shared" / "data")
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def shared_data_dir(subdir: str | None = None) -> Path:
    """The shared data folder (or one data set inside it); :class:`DataMissing` if absent.

    When ``$SPECULABEL_DATA`` is set it is the only place looked at, so a wrong value is reported
    rather than silently replaced by another folder.
    """
    env = os.environ.get(ENV_VAR)
    dirs = [Path(env).expanduser()] if env else candidate_data_dirs()
    tried: list[str] = []
    for d in dirs:
        target = d / subdir if subdir else d
        if target.is_dir():
            return target
        tried.append(str(target))
    where = f"${ENV_VAR}" if env else f"../shared/data (or set ${ENV_VAR})"
    what = f"data set {subdir!r}" if subdir else "shared data folder"
    raise DataMissing(f"{what} not found in {where}; looked in: {', '.join(tried)}")


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataMissing(f"missing data file {path}")
    return path


def tweeteval(split: str = "test", limit: int | None = None) -> Labelled:
    """TweetEval sentiment: items ``{"text": tweet}`` and gold negative/neutral/positive.

    ``split`` is ``test`` (the first 6,000 test tweets in the shared copy) or ``val``; ``limit``
    keeps the first N, so every run with the same N sees the same tweets.
    """
    if split not in ("test", "val"):
        raise ValueError(f"tweeteval split must be 'test' or 'val', got {split!r}")
    d = shared_data_dir("tweeteval-sentiment")
    texts = _need(d / f"{split}_text.txt").read_text(encoding="utf-8").split("\n")
    labels = _need(d / f"{split}_labels.txt").read_text(encoding="utf-8").split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    if labels and labels[-1] == "":
        labels.pop()
    if len(texts) != len(labels):
        raise ValueError(f"{d}: {len(texts)} tweets but {len(labels)} labels in split {split!r}")
    n = len(texts) if limit is None else min(limit, len(texts))
    items: list[Item] = []
    gold: list[str] = []
    for i in range(n):
        items.append(Item(id=f"tweeteval-{split}-{i}", fields={"text": texts[i].strip()}))
        gold.append(TWEETEVAL_LABELS[int(labels[i].strip())])
    return Labelled(
        name=f"tweeteval-sentiment/{split}",
        items=items,
        gold=gold,
        source=str(d),
        info={"split": split, "limit": limit, "available": len(texts)},
    )


def _intent_words(intent: str) -> frozenset[str]:
    return frozenset(w for w in intent.split("_") if w and w not in _STOP)


def hard_intent_pairs(intents: list[str]) -> list[tuple[str, str]]:
    """Pairs of distinct intents whose names share a word (besides stop words), sorted."""
    words = {i: _intent_words(i) for i in intents}
    return [(a, b) for a, b in itertools.combinations(sorted(intents), 2) if words[a] & words[b]]


def banking77_pairs(n: int = 500, seed: int = 0, split: str = "test") -> Labelled:
    """Deterministic "similar ticket" pairs from Banking77 (``split``.csv).

    ``n // 2`` similar pairs (two different queries of the same intent) and ``n - n // 2``
    not-similar pairs, of which a quarter (rounded down) are hard negatives (intents whose names
    share a word) and the rest easy (no shared word).  No pair repeats.  The pairs are shuffled
    with the same seed, so ``banking77_pairs(n, seed)`` is the same list on every machine.
    Items have fields ``text_a``/``text_b``; gold labels are ``similar`` / ``not_similar``.
    """
    if n < 2:
        raise ValueError(f"need at least 2 pairs, got {n}")
    d = shared_data_dir("banking77")
    path = _need(d / f"{split}.csv")
    by_intent: dict[str, list[str]] = defaultdict(list)
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text = " ".join(row["text"].split())
            if text and text not in by_intent[row["category"]]:
                by_intent[row["category"]].append(text)
    intents = sorted(k for k, v in by_intent.items() if v)
    if len(intents) < 2:
        raise ValueError(f"{path}: fewer than two intents")
    hard = hard_intent_pairs(intents)
    hard_set = set(hard)
    easy = [p for p in itertools.combinations(intents, 2) if p not in hard_set]

    rng = random.Random(seed)
    n_pos = n // 2
    n_neg = n - n_pos
    n_hard = n_neg // 4
    n_easy = n_neg - n_hard
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str, str, str]] = []  # text_a, text_b, gold, kind

    def add(a: str, b: str, gold: str, kind: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        if a == b or key in seen:
            return False
        seen.add(key)
        pairs.append((a, b, gold, kind))
        return True

    def draw(count: int, pick: Callable[[], tuple[str, str]], gold: str, kind: str) -> None:
        made, tries = 0, 0
        while made < count:
            tries += 1
            if tries > 100 * count + 1000:
                raise ValueError(f"{path}: cannot build {count} distinct {kind} pairs")
            a, b = pick()
            if rng.random() < 0.5:
                a, b = b, a
            made += add(a, b, gold, kind)

    multi = [i for i in intents if len(by_intent[i]) >= 2]

    def pick_pos() -> tuple[str, str]:
        intent = rng.choice(multi)
        a, b = rng.sample(by_intent[intent], 2)
        return a, b

    def pick_from(intent_pairs: list[tuple[str, str]]) -> tuple[str, str]:
        ia, ib = rng.choice(intent_pairs)
        return rng.choice(by_intent[ia]), rng.choice(by_intent[ib])

    draw(n_pos, pick_pos, "similar", "positive")
    draw(n_hard, lambda: pick_from(hard), "not_similar", "hard_negative")
    draw(n_easy, lambda: pick_from(easy), "not_similar", "easy_negative")
    rng.shuffle(pairs)

    items = [
        Item(id=f"banking77-{split}-pair-{i}", fields={"text_a": a, "text_b": b})
        for i, (a, b, _, _) in enumerate(pairs)
    ]
    return Labelled(
        name=f"banking77-pairs/{split}",
        items=items,
        gold=[g for _, _, g, _ in pairs],
        source=str(path),
        info={
            "split": split,
            "seed": seed,
            "n": n,
            "similar": n_pos,
            "hard_negatives": n_hard,
            "easy_negatives": n_easy,
            "kinds": [k for _, _, _, k in pairs],
            "hard_intent_pairs": len(hard),
        },
    )


DATASETS = ("tweeteval", "banking77-pairs")


#: the data set specs that ``calibrate`` (and scripts) accept in place of a file
DATASET_SPECS = ("tweeteval:val[:N]", "tweeteval:test[:N]", "banking77-pairs[:N]")


def is_dataset_spec(source: str) -> bool:
    return source.partition(":")[0] in ("tweeteval", "banking77-pairs")


def from_spec(source: str, limit: int | None = None) -> Labelled:
    """``tweeteval:val:300``, ``tweeteval:test``, ``banking77-pairs:1000`` (N defaults to
    ``limit``; banking77 pairs to 500).  :class:`ValueError` for a malformed spec."""
    parts = source.split(":")
    head = parts[0]
    try:
        if head == "tweeteval":
            split = parts[1] if len(parts) > 1 else "val"
            n = int(parts[2]) if len(parts) > 2 else limit
            data = tweeteval(split, n)
        elif head == "banking77-pairs":
            n = int(parts[1]) if len(parts) > 1 else (limit or 500)
            data = banking77_pairs(n)
        else:
            raise ValueError(f"unknown data set {head!r}")
    except ValueError as e:
        raise ValueError(f"bad data set spec {source!r} ({e}); use one of "
                         f"{', '.join(DATASET_SPECS)}") from None
    if limit is not None and len(data) > limit:
        data = Labelled(data.name, data.items[:limit], data.gold[:limit], data.source, data.info)
    return data
