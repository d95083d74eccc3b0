"""``confident-margin``: a majority, and the mean *margin* the agreeing workers give the winning
label (its probability minus that of their next most likely label) is at least ``threshold``.

Why: with many labels the top probability is spread thin (77 intents: a sure answer may get
0.5), while the margin says how far the winner is ahead of its closest rival; it separates right
from wrong answers better when probability mass is shared among near-synonymous labels.  It is
a score fixed before certifying, so ``calibrate`` certifies its threshold like any other rule's.
"""

from __future__ import annotations

from collections.abc import Sequence

from speculabel.policy.base import Decision, Policy, check_threshold, strict_majority
from speculabel.records import Vote


def margin(vote: Vote, label: str) -> float:
    """``label``'s probability minus the largest probability of any other label."""
    rest = [p for lab, p in vote.probs.items() if lab != label]
    return vote.probs.get(label, 0.0) - (max(rest) if rest else 0.0)


class ConfidentMargin(Policy):
    name = "confident-margin"
    uses_threshold = True

    def __init__(self, threshold: float = 0.0, min_answered: int | None = None) -> None:
        super().__init__(min_answered)
        self.threshold = check_threshold(threshold)

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        m = strict_majority(votes, n, self._min(n))
        if isinstance(m, Decision):
            return m
        label, agreeing = m
        gap = max(0.0, sum(margin(v, label) for v in agreeing) / len(agreeing))
        if gap < self.threshold:
            return Decision(False, label, gap, f"margin {gap:.3f} < {self.threshold:.3f}")
        return Decision(True, label, gap, "confident margin")

    def describe(self) -> str:
        return f"{self.name}@{self.threshold:g}"
