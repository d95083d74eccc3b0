"""Per-model confidence calibration applied on top of any backend's raw votes.

Calibration is a transform of the distribution, not of the model: raw votes stay in the vote
store, so a new calibration costs no model call.  ``offsets`` are contextual-calibration log
probabilities to subtract per label (the model's mean on content-free inputs); ``temperature``
divides the (offset) log probabilities before renormalising.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from speculabel.backends.base import Backend, BackendWrapper
from speculabel.records import Item, Vote, normalise_logprobs
from speculabel.tasks import Task


def calibrate_vote(
    vote: Vote, offsets: dict[str, float] | None = None, temperature: float = 1.0
) -> Vote:
    if vote.label is None or not vote.probs:
        return vote
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    offsets = offsets or {}
    logp = {
        lab: (math.log(max(p, 1e-12)) - offsets.get(lab, 0.0)) / temperature
        for lab, p in vote.probs.items()
    }
    probs = normalise_logprobs(logp)
    out = Vote.from_probs(
        vote.model, probs, latency_s=vote.latency_s, method=vote.method, truncated=vote.truncated
    )
    out.cached = vote.cached
    return out


class CalibratedBackend(BackendWrapper):
    """Another backend's votes, recalibrated (raw votes stay in the vote store under it)."""

    def __init__(
        self, inner: Backend, offsets: dict[str, float] | None = None, temperature: float = 1.0
    ) -> None:
        super().__init__(inner)
        self.offsets = dict(offsets or {})
        self.temperature = float(temperature)

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        return [
            calibrate_vote(v, self.offsets, self.temperature)
            for v in self.inner.score(task, items)
        ]
