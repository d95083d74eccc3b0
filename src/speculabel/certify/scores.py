"""From votes to what the certificate is about: each item's support under a rule, and whether the
workers' label agrees with the reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from speculabel.calibration.choose import ModelCalibration
from speculabel.calibration.temperature import apply_calibration
from speculabel.policy import THRESHOLD_RULES, ConfidentMajority, Policy, WeightedVote
from speculabel.records import Vote


def policy_scores(
    policy: Policy, votes: Sequence[Sequence[Vote]], n_workers: int | None = None
) -> tuple[np.ndarray, list[str | None]]:
    """Each item's support under ``policy`` run at threshold 0, and the workers' label.

    An item the rule does not accept even at threshold 0 (no majority, a tie, too few answers)
    gets ``-inf``: no threshold lets the workers decide it.
    """
    scores = np.full(len(votes), -np.inf)
    labels: list[str | None] = []
    for i, vs in enumerate(votes):
        d = policy.decide(vs, n_workers if n_workers is not None else len(vs))
        labels.append(d.label)
        if d.accepted:
            scores[i] = d.support
    return scores, labels


def agreement_flags(labels: Sequence[str | None], reference: Sequence[str | None]) -> np.ndarray:
    pairs = zip(labels, reference, strict=True)
    return np.array([a is not None and r is not None and a == r for a, r in pairs], dtype=bool)


def make_calibrated_policy(
    name: str, threshold: float = 0.0, weights: Mapping[str, float] | None = None
) -> Policy:
    if name == "confident-majority":
        return ConfidentMajority(threshold)
    if name == "weighted":
        return WeightedVote(dict(weights or {}), threshold)
    if name == "confident-margin":
        from speculabel.policy.margin import ConfidentMargin

        return ConfidentMargin(threshold)
    raise ValueError(f"policy {name!r} has no threshold to calibrate; use one of "
                     f"{', '.join(THRESHOLD_RULES)}")


@dataclass
class CalibrationData:
    """Per-item worker votes (raw, uncalibrated), the reference labels, and the task labels.

    ``judge``: the judge's label per item, needed when the reference is gold and the judge is
    compared with the cascade (non-inferiority); ``None`` otherwise.
    """

    labels: list[str]
    workers: list[str]
    votes: list[list[Vote]]  # votes[i][w]: worker w on item i
    reference: list[str | None]
    ids: list[str] = field(default_factory=list)
    judge: list[str | None] | None = None

    def __post_init__(self) -> None:
        if len(self.votes) != len(self.reference):
            raise ValueError(f"{len(self.votes)} vote rows but {len(self.reference)} references")
        if self.judge is not None and len(self.judge) != len(self.votes):
            raise ValueError(f"{len(self.votes)} vote rows but {len(self.judge)} judge labels")
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.votes))]

    def subset(self, idx: Sequence[int]) -> CalibrationData:
        return CalibrationData(self.labels, self.workers, [self.votes[i] for i in idx],
                               [self.reference[i] for i in idx], [self.ids[i] for i in idx],
                               None if self.judge is None else [self.judge[i] for i in idx])

    def judge_right(self) -> np.ndarray | None:
        """Whether the judge's label equals the reference, per item (None without a judge)."""
        if self.judge is None:
            return None
        return agreement_flags(self.judge, self.reference)

    def with_reference(self) -> CalibrationData:
        """Only the items that have a reference label."""
        return self.subset([i for i, r in enumerate(self.reference) if r is not None])

    def worker_votes(self, w: int) -> list[Vote]:
        return [row[w] for row in self.votes]

    def __len__(self) -> int:
        return len(self.votes)


def calibrated_votes(data: CalibrationData, calibration: Mapping[str, ModelCalibration]
                     ) -> list[list[Vote]]:
    """The votes as the cascade will see them after per-model calibration."""
    cols = []
    for w, name in enumerate(data.workers):
        c = calibration.get(name)
        vs = data.worker_votes(w)
        cols.append(apply_calibration(vs, c.offsets, c.temperature) if c else vs)
    return [list(row) for row in zip(*cols, strict=True)] if cols else [[] for _ in data.votes]


def evaluate_rule(
    data: CalibrationData,
    policy: str,
    threshold: float | None,
    *,
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, ModelCalibration] | None = None,
) -> dict[str, float]:
    """Coverage and agreement of a rule on (other) labelled data: what the guarantee is about."""
    data = data.with_reference()
    scores, agree = rule_scores(data, policy, weights, calibration)
    acc = scores >= threshold if threshold is not None else np.zeros(len(scores), dtype=bool)
    n = int(acc.sum())
    return {
        "n": len(scores),
        "decided": n,
        "coverage": n / len(scores) if len(scores) else 0.0,
        "agreement": float(agree[acc].mean()) if n else float("nan"),
    }


def rule_scores(
    data: CalibrationData,
    policy: str,
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, ModelCalibration] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's support under the rule (``-inf``: never accepted) and whether the workers'
    label agrees with the reference, after per-model calibration."""
    votes = calibrated_votes(data, calibration or {})
    scores, labels = policy_scores(make_calibrated_policy(policy, 0.0, weights), votes,
                                   len(data.workers))
    return scores, agreement_flags(labels, data.reference)
