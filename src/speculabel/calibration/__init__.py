"""Per-model calibration: contextual offsets, temperature scaling, reliability weights.

These change how a worker's confidence is read, not which threshold is safe; that is
:mod:`speculabel.certify`.
"""

from speculabel.calibration.choose import ModelCalibration, choose_model_calibration
from speculabel.calibration.offsets import CONTENT_FREE, contextual_offsets
from speculabel.calibration.temperature import apply_calibration, fit_temperature
from speculabel.calibration.weights import reliability_weights

__all__ = [
    "CONTENT_FREE",
    "ModelCalibration",
    "apply_calibration",
    "choose_model_calibration",
    "contextual_offsets",
    "fit_temperature",
    "reliability_weights",
]
