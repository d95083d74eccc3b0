"""VADER sentiment lexicon as a worker: a cheap, non-LLM vote (about 0.1 ms per text).

Spec: ``vader``.  It answers only sentiment tasks, i.e. tasks with one input field whose label
names are exactly ``negative``, ``neutral`` and ``positive``; any other task is refused with a
:class:`BackendError` (a lexicon has nothing to say about, e.g., ticket similarity).

How VADER's scores become a distribution (mapping ``v1``)
---------------------------------------------------------
VADER returns ``compound`` ``c`` in [-1, 1] and the shares ``neg``/``neu``/``pos``.  The label is
VADER's own documented rule: ``positive`` if ``c >= 0.05``, ``negative`` if ``c <= -0.05``, else
``neutral``.  The probabilities are a fixed piecewise-linear map of ``c``, chosen so that the
confidence of a label roughly follows how often that label was right on the TweetEval
*validation* split (benchmarks use the test split, so nothing is fitted on what is measured):

* polar (``|c| >= 0.05``), label ``L`` with the sign of ``c``:
  ``p(L) = 0.40 + 0.55 * |c|`` (0.43 at the threshold, 0.95 at ``|c| = 1``); of the rest,
  60 % goes to ``neutral`` and 40 % to the opposite label.  (Observed on validation: right
  36 % of the time at ``|c|`` about 0.2, 57 % at 0.6, 90 % near 1.)
* neutral (``|c| < 0.05``, mostly texts with no lexicon word at all): ``p(neutral) = 0.60``
  (observed 64 %); the other 0.40 is split between ``positive`` and ``negative`` linearly in
  ``c`` (0.20 each at ``c = 0``).

The arg-max of the distribution is always VADER's label.  The fingerprint names the
vaderSentiment version and the mapping version, so cached votes change when either does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.records import Item, Vote
from speculabel.tasks import Task

MAPPING_VERSION = "v1"
THRESHOLD = 0.05
SENTIMENT_LABELS = frozenset({"negative", "neutral", "positive"})
#: the lexicon's scores a learner appends to its embedding (``learner:minilm``, ``lexicon=true``)
LEXICON_COLUMNS = ("neg", "neu", "pos", "compound")


class LexiconScorer:
    """VADER's four scores per text, as features (the analyser is built on first use)."""

    def __init__(self, owner: str = "lexicon") -> None:
        self.owner = owner
        self._analyzer: Any = None

    def __call__(self, texts: Sequence[str]) -> Any:
        import numpy as np

        if self._analyzer is None:
            try:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            except ImportError as e:
                raise BackendError(f"{self.owner}: lexicon=true needs vaderSentiment: "
                                   "pip install 'speculabel[embed]'") from e
            self._analyzer = SentimentIntensityAnalyzer()
        rows = [self._analyzer.polarity_scores(t) for t in texts]
        return np.array([[r[c] for c in LEXICON_COLUMNS] for r in rows], dtype=np.float32)


def compound_to_probs(c: float) -> dict[str, float]:
    """The documented map from VADER's compound score to a distribution (see module docs)."""
    c = max(-1.0, min(1.0, float(c)))
    if c >= THRESHOLD or c <= -THRESHOLD:
        lab, opp = ("positive", "negative") if c > 0 else ("negative", "positive")
        p = 0.40 + 0.55 * abs(c)
        rest = 1.0 - p
        probs = {lab: p, "neutral": 0.6 * rest, opp: 0.4 * rest}
    else:
        pos = 0.40 * (THRESHOLD + c) / (2 * THRESHOLD)
        probs = {"neutral": 0.60, "positive": pos, "negative": 0.40 - pos}
    return {k: probs[k] for k in ("negative", "neutral", "positive")}


def vader_label(c: float) -> str:
    """VADER's own rule for the compound score."""
    if c >= THRESHOLD:
        return "positive"
    if c <= -THRESHOLD:
        return "negative"
    return "neutral"


class VaderBackend(Backend):
    """The VADER lexicon (package ``vaderSentiment``) behind the :class:`Backend` interface."""

    batch_hint = 512

    def __init__(self, spec: str = "vader") -> None:
        self.spec = spec
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise BackendError(
                "the 'vader' worker needs the vaderSentiment package: "
                "pip install 'speculabel[bench]' (or pip install vaderSentiment)"
            ) from e
        from importlib.metadata import PackageNotFoundError, version

        try:
            self.version = version("vaderSentiment")
        except PackageNotFoundError:  # pragma: no cover
            self.version = "unknown"
        self._analyzer = SentimentIntensityAnalyzer()

    def fingerprint(self) -> str:
        return f"vader:{self.version}:map-{MAPPING_VERSION}"

    @classmethod
    def check_spec(cls, spec: str, options: dict[str, Any], task: Task | None = None) -> None:
        """``vader`` takes no options and scores three-way sentiment tasks only."""
        if spec != "vader":
            raise BackendError(f"unknown lexicon spec {spec!r}; the only lexicon is 'vader'")
        if options:
            raise BackendError(f"vader: the lexicon takes no options, got {sorted(options)}")
        if task is not None and (set(task.label_names) != SENTIMENT_LABELS or len(task.fields) != 1):
            raise BackendError(
                f"vader: the VADER lexicon only scores sentiment tasks (one text field, labels "
                f"negative/neutral/positive); task {task.name!r} has labels "
                f"{task.label_names} and fields {list(task.fields)}"
            )

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> VaderBackend:
        cls.check_spec(spec, options)
        return cls(spec)

    def check_task(self, task: Task) -> None:
        """Raise :class:`BackendError` unless the task is a three-way sentiment task."""
        self.check_spec(self.spec, {}, task)

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        self.check_task(task)
        field = task.fields[0]
        votes: list[Vote] = []
        for item in items:
            t0 = time.perf_counter()
            text = item.fields.get(field, "")
            c = float(self._analyzer.polarity_scores(text)["compound"])
            probs = compound_to_probs(c)
            dt = time.perf_counter() - t0
            votes.append(
                Vote(self.spec, vader_label(c), probs, latency_s=dt, method="classifier")
            )
        return votes


def from_spec(spec: str, **options: Any) -> VaderBackend:
    """The registry's factory (kept as a function for callers that import it)."""
    return VaderBackend.from_spec(spec, **options)
