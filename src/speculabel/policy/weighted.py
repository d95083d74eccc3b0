"""``weighted``: each worker's vote counts with a weight (e.g. the log-odds of its measured
reliability, see :mod:`speculabel.calibration.weights`); the label with the largest weighted
probability mass wins when its share of the total is at least ``threshold``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from speculabel.policy.base import Decision, Policy, check_threshold
from speculabel.records import Vote


class WeightedVote(Policy):
    """Reliability-weighted soft vote; weights are per worker name (missing weight: 1)."""

    name = "weighted"
    uses_threshold = True

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        threshold: float = 0.5,
        min_answered: int | None = None,
    ) -> None:
        super().__init__(min_answered)
        self.weights = dict(weights or {})
        self.threshold = check_threshold(threshold)

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
