"""``confident-margin``: a majority, and the mean *margin* the agreeing workers give the winning
label (its probability minus that of their next most likely label) is at least ``threshold``.

Why: with many labels the top probability is spread thin (77 intents: a sure answer may get
0.5), while the margin says how far the winner is ahead of its closest rival; it separates right
from wrong answers better when probability mass is shared among near-synonymous labels.  It is
a score fixed before certifying, so ``calibrate`` certifies its threshold like any other rule's.
"""

from __future__ import annotations

from collections.abc import Sequence

from speculabel.policy.confident import ConfidentMajority
from speculabel.records import Vote


def margin(vote: Vote, label: str) -> float:
    """``label``'s probability minus the largest probability of any other label."""
    rest = [p for lab, p in vote.probs.items() if lab != label]
    return vote.probs.get(label, 0.0) - (max(rest) if rest else 0.0)


class ConfidentMargin(ConfidentMajority):
    name = "confident-margin"
    score_name = "margin"
    accepted_reason = "confident margin"

    def support(self, label: str, agreeing: Sequence[Vote]) -> float:
        """The agreeing workers' mean margin for the majority label (at least 0)."""
        return max(0.0, sum(margin(v, label) for v in agreeing) / len(agreeing))
