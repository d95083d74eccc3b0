"""``unanimous``: every worker answered and all agree."""

from __future__ import annotations

from collections.abc import Sequence

from speculabel.policy.base import Decision, Policy
from speculabel.records import Vote


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
