"""``confident-majority`` (the paper's Criterion 2): a majority, and the mean probability that the
agreeing workers give the winning label is at least ``threshold``."""

from __future__ import annotations

from collections.abc import Sequence

from speculabel.policy.base import Decision, Policy, check_threshold, strict_majority
from speculabel.records import Vote


class ConfidentMajority(Policy):
    name = "confident-majority"
    uses_threshold = True

    def __init__(self, threshold: float = 0.0, min_answered: int | None = None) -> None:
        super().__init__(min_answered)
        self.threshold = check_threshold(threshold)

    #: what the score is called in a decision's reason, and the reason of an accepted item
    score_name = "confidence"
    accepted_reason = "confident majority"

    def support(self, label: str, agreeing: Sequence[Vote]) -> float:
        """The rule's score for the majority label: the agreeing workers' mean probability."""
        return sum(v.probs.get(label, 0.0) for v in agreeing) / len(agreeing)

    def needed(self, label: str) -> float:
        """The score the majority label must reach (one threshold for every label here)."""
        return self.threshold

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        m = strict_majority(votes, n, self._min(n))
        if isinstance(m, Decision):
            return m
        label, agreeing = m
        score, need = self.support(label, agreeing), self.needed(label)
        if score < need:
            return Decision(False, label, score, f"{self.score_name} {score:.3f} < {need:.3f}")
        return Decision(True, label, score, self.accepted_reason)

    def describe(self) -> str:
        return f"{self.name}@{self.threshold:g}"
