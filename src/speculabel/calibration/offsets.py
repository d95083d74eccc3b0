"""Contextual calibration (Zhao et al. 2021): a model's label bias, measured on empty inputs.

A model's mean log-probabilities on content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``) are its
label bias; subtracting them re-centres its distribution.  It can change the arg-max, so it
changes accuracy (up or down): :func:`speculabel.calibration.choose.choose_model_calibration`
keeps it only where a sign test says it helps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from speculabel.backends.calibrated import calibrate_vote
from speculabel.records import Item, Vote

CONTENT_FREE = ("N/A", "", "[MASK]")


def contextual_offsets(
    score: Callable[[Sequence[Item]], Sequence[Vote]],
    fields: Sequence[str],
    content_free: Sequence[str] = CONTENT_FREE,
) -> dict[str, float]:
    """A model's mean label log-probabilities on content-free inputs (Zhao et al. 2021).

    ``score`` is e.g. ``lambda items: backend.score(task, items)``.  Every field of an item gets
    the same content-free string.  Inputs the model abstains on (some backends refuse an empty
    text) are skipped; if it answers none of them, :class:`ValueError`.
    """
    items = [Item(f"content-free-{i}", {f: text for f in fields}) for i, text in
             enumerate(content_free)]
    votes = [v for v in score(items) if v.label is not None and v.probs]
    if not votes:
        raise ValueError("the model answered none of the content-free inputs")
    labels = list(votes[0].probs)
    out = {}
    for lab in labels:
        out[lab] = float(np.mean([math.log(max(v.probs.get(lab, 0.0), 1e-12)) for v in votes]))
    # centre them: only differences between labels matter after renormalising
    mean = float(np.mean(list(out.values())))
    return {k: round(v - mean, 6) for k, v in out.items()}


def flips(
    votes: Sequence[Vote], reference: Sequence[str], offsets: Mapping[str, float]
) -> tuple[int, int]:
    """Items the offsets turn right (gained) and turn wrong (lost) against the reference."""
    gained = lost = 0
    for v, r in zip(votes, reference, strict=True):
        if v.label is None or not v.probs:
            continue
        after = calibrate_vote(v, dict(offsets)).label
        if after == v.label:
            continue
        gained += after == r
        lost += v.label == r
    return gained, lost
