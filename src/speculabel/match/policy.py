"""The acceptance rule for candidate pairs: one threshold to report a match, another to drop one.

``confident-majority`` has one threshold for every label.  For matching the two errors differ:
a wrong match is reported to the user (its precision is what :func:`certify_matches`
certifies), a wrong "not similar" only loses a match.  So the workers' *match* is accepted at
the certified ``threshold``, and their *non-match* at ``reject`` (usually lower: most candidate
pairs are clear non-matches, and the judge's budget is better spent near the match threshold).
The precision certificate holds whatever ``reject`` is: it concerns only the pairs the workers
call matches.
"""

from __future__ import annotations

from collections.abc import Sequence

from speculabel.policy import ConfidentMajority
from speculabel.policy.base import Decision, check_threshold, strict_majority
from speculabel.records import Vote


class MatchRule(ConfidentMajority):
    """A majority whose label is accepted when its mean confidence reaches ``threshold`` (the
    match label) or ``reject`` (any other label)."""

    name = "match-rule"

    def __init__(self, threshold: float, reject: float, label: str = "similar",
                 min_answered: int | None = None) -> None:
        super().__init__(threshold, min_answered)
        self.reject = check_threshold(reject)
        self.label = label

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        n = n_workers if n_workers is not None else len(votes)
        m = strict_majority(votes, n, self._min(n))
        if isinstance(m, Decision):
            return m
        label, agreeing = m
        conf = sum(v.probs.get(label, 0.0) for v in agreeing) / len(agreeing)
        need = self.threshold if label == self.label else self.reject
        if conf < need:
            return Decision(False, label, conf, f"confidence {conf:.3f} < {need:.3f}")
        return Decision(True, label, conf, "confident majority")

    def describe(self) -> str:
        return f"{self.name}@{self.threshold:g}/{self.reject:g}"
