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

from speculabel.policy import ConfidentMajority
from speculabel.policy.base import check_threshold


class MatchRule(ConfidentMajority):
    """A majority whose label is accepted when its mean confidence reaches ``threshold`` (the
    match label) or ``reject`` (any other label)."""

    name = "match-rule"

    def __init__(self, threshold: float, reject: float, label: str = "similar",
                 min_answered: int | None = None) -> None:
        super().__init__(threshold, min_answered)
        self.reject = check_threshold(reject)
        self.label = label

    def needed(self, label: str) -> float:
        return self.threshold if label == self.label else self.reject

    def describe(self) -> str:
        return f"{self.name}@{self.threshold:g}/{self.reject:g}"
