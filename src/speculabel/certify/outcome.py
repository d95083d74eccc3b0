"""What a calibration found (shared by the workflow and the choice of the fit share)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from speculabel.certify.plan import CascadePlan
from speculabel.certify.scores import CalibrationData


@dataclass
class Calibration:
    """What the workflow found: the plan, the split, where the fitted workers live."""

    plan: CascadePlan
    n_fit: int
    n_certify: int
    reference: str  # "judge" or "gold"
    fitted: dict[str, Path] = field(default_factory=dict)  # worker spec -> its folder
    judge_accuracy: float | None = None  # on gold, over the certify share (when both exist)
    data: CalibrationData | None = None  # the certify share, for the caller's summaries
    notes: list[str] = field(default_factory=list)  # what the caller should know (printed)
    fit_fraction: float | None = None  # the fit share used (chosen, under "auto")
