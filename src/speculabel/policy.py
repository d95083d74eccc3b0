"""Acceptance rules: when do the workers' votes stand, and when does the judge decide?

Conventions, the same for every rule:

* An **abstention** (a worker that failed or could not answer) is not a vote: it counts neither
  for nor against any label.  Only the workers that *answered* are counted.
* At least ``min_answered`` workers must have answered (default: 2, or 1 when the cascade has a
  single worker); with fewer, the item goes to the judge.  One surviving worker never decides
  alone for a team of two or three.
* **Ties** (e.g. 1-1 with two workers, or 1-1-1 with three) are never accepted: there is no
  strict majority, so the judge decides.

Rules:

* ``majority`` (the paper's Criterion 1): one label has strictly more than half of the answering
  votes. With two workers both must agree; with three, two of three.
* ``unanimous``: every worker answered and all agree.
* ``confident-majority`` (Criterion 2): a majority, and the mean probability that the agreeing
  workers give the winning label is at least ``threshold``.
* ``weighted``: each worker's vote counts with a weight (e.g. the log-odds of its measured
  reliability, see :mod:`speculabel.calibrate`); the label with the largest weighted
  probability mass wins when its share of the total is at least ``threshold``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from speculabel.records import Vote


@dataclass(frozen=True)
class Decision:
    accepted: bool
    label: str | None  # the workers' winning label (also reported when not accepted)
    support: float  # the rule's score for that label (vote share, or mean confidence)
    reason: str


class Policy(ABC):
    name: str = ""

    def __init__(self, min_answered: int | None = None) -> None:
        self.min_answered = min_answered

    def _min(self, n_workers: int) -> int:
        if self.min_answered is not None:
            return self.min_answered
        return min(2, n_workers)

    @abstractmethod
    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        """Accept the workers' label or send the item to the judge.

        ``n_workers`` is how many workers the cascade has (default: ``len(votes)``); it matters
        when some votes are missing, e.g. under early exit.
        """

    def describe(self) -> str:
        return self.name


def _majority(votes: Sequence[Vote], n_workers: int, min_answered: int) -> Decision | tuple[
    str, list[Vote]
]:
    answered = [v for v in votes if v.label is not None]
    if len(answered) < min_answered:
        return Decision(False, None, 0.0, f"only {len(answered)} of {n_workers} workers answered")
    counts = Counter(v.label for v in answered)
    (label, top), *rest = counts.most_common()
    assert label is not None
    if rest and rest[0][1] == top:
        return Decision(False, label, top / len(answered), "tie")
    if top * 2 <= len(answered):
        return Decision(False, label, top / len(answered), "no majority")
    return label, [v for v in answered if v.label == label]


class Majority(Policy):
    name = "majority"

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        m = _majority(votes, n, self._min(n))
        if isinstance(m, Decision):
            return m
        label, agreeing = m
        n_answered = sum(v.label is not None for v in votes)
        return Decision(True, label, len(agreeing) / n_answered, "majority")


class Unanimous(Policy):
    name = "unanimous"

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        answered = [v for v in votes if v.label is not None]
        if len(answered) < max(n, 1):
            return Decision(False, None, 0.0, f"only {len(answered)} of {n} workers answered")
        labels = {v.label for v in answered}
        if len(labels) != 1:
            return Decision(False, None, 0.0, "disagreement")
        return Decision(True, answered[0].label, 1.0, "unanimous")


class ConfidentMajority(Policy):
    name = "confident-majority"

    def __init__(self, threshold: float = 0.0, min_answered: int | None = None) -> None:
        super().__init__(min_answered)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        m = _majority(votes, n, self._min(n))
        if isinstance(m, Decision):
            return m
        label, agreeing = m
        conf = sum(v.probs.get(label, 0.0) for v in agreeing) / len(agreeing)
        if conf < self.threshold:
            return Decision(False, label, conf, f"confidence {conf:.3f} < {self.threshold:.3f}")
        return Decision(True, label, conf, "confident majority")

    def describe(self) -> str:
        return f"{self.name}@{self.threshold:g}"


@dataclass
class WeightedVote(Policy):
    """Reliability-weighted soft vote; weights are per worker name (missing weight: 1)."""

    weights: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.5
    min_answered_: int | None = None
    name = "weighted"

    def __post_init__(self) -> None:
        self.min_answered = self.min_answered_

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        answered = [v for v in votes if v.label is not None]
        if len(answered) < self._min(n):
            return Decision(False, None, 0.0, f"only {len(answered)} of {n} workers answered")
        mass: dict[str, float] = {}
        total = 0.0
        for v in answered:
            w = max(0.0, self.weights.get(v.model, 1.0))
            total += w
            for lab, p in v.probs.items():
                mass[lab] = mass.get(lab, 0.0) + w * p
        if total <= 0:
            return Decision(False, None, 0.0, "all weights are zero")
        label = max(mass, key=lambda k: mass[k])
        share = mass[label] / total
        if share < self.threshold:
            return Decision(False, label, share, f"weighted share {share:.3f} < {self.threshold:.3f}")
        return Decision(True, label, share, "weighted vote")

    def describe(self) -> str:
        return f"{self.name}@{self.threshold:g}"


POLICIES = ("majority", "unanimous", "confident-majority", "weighted")


def make_policy(
    name: str,
    threshold: float | None = None,
    *,
    weights: dict[str, float] | None = None,
    min_answered: int | None = None,
) -> Policy:
    """A rule by name (the CLI's ``--policy``)."""
    if name == "majority":
        return Majority(min_answered)
    if name == "unanimous":
        return Unanimous(min_answered)
    if name in ("confident-majority", "confident_majority"):
        return ConfidentMajority(threshold if threshold is not None else 0.0, min_answered)
    if name == "weighted":
        return WeightedVote(
            weights or {}, threshold if threshold is not None else 0.5, min_answered
        )
    raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
