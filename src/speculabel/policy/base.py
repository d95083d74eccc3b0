"""What every acceptance rule shares: the decision it returns and the majority count.

Conventions, the same for every rule:

* An **abstention** (a worker that failed or could not answer) is not a vote: it counts neither
  for nor against any label.  Only the workers that *answered* are counted.
* At least ``min_answered`` workers must have answered (default: 2, or 1 when the cascade has a
  single worker); with fewer, the item goes to the judge.  One surviving worker never decides
  alone for a team of two or three.
* **Ties** (e.g. 1-1 with two workers, or 1-1-1 with three) are never accepted: there is no
  strict majority, so the judge decides.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from speculabel.errors import SpeculabelError
from speculabel.records import Vote


class PolicyError(SpeculabelError, ValueError):
    """A rule is asked for with settings it cannot take (unknown name, missing threshold)."""


@dataclass(frozen=True)
class Decision:
    accepted: bool
    label: str | None  # the workers' winning label (also reported when not accepted)
    support: float  # the rule's score for that label (vote share, or mean confidence)
    reason: str


class Policy(ABC):
    """An acceptance rule: one abstract method, :meth:`decide`."""

    name: ClassVar[str] = ""
    #: whether the rule takes a threshold (``confident-majority``, ``weighted``)
    uses_threshold: ClassVar[bool] = False

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
        """The rule as the bench and the records name it (``confident-majority@0.8``)."""
        return self.name


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise PolicyError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def strict_majority(
    votes: Sequence[Vote], n_workers: int, min_answered: int
) -> Decision | tuple[str, list[Vote]]:
    """The majority label and the votes for it, or the refusal when there is none."""
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
