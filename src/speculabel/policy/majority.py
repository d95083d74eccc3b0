"""``majority`` (the paper's Criterion 1): one label has strictly more than half of the answering
votes; with two workers both must agree, with three two of three."""

from __future__ import annotations

from collections.abc import Sequence

from speculabel.policy.base import Decision, Policy, strict_majority
from speculabel.records import Vote


class Majority(Policy):
    name = "majority"

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        m = strict_majority(votes, n, self._min(n))
        if isinstance(m, Decision):
            return m
        label, agreeing = m
        n_answered = sum(v.label is not None for v in votes)
        return Decision(True, label, len(agreeing) / n_answered, "majority")
