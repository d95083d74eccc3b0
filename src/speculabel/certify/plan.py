"""A calibrated acceptance rule: fit what needs fitting on one share of the items, certify the
threshold on the rest, so the guarantee is untouched by the fitting."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from speculabel.calibration.choose import ModelCalibration, choose_model_calibration
from speculabel.calibration.weights import reliability_weights
from speculabel.cascade.config import CascadeConfig, make_config
from speculabel.certify.scope import Scope
from speculabel.certify.scores import CalibrationData, calibrated_votes, rule_scores
from speculabel.certify.threshold import (
    CalibrationResult,
    calibrate_threshold,
    max_feasible_target,
)
from speculabel.policy import THRESHOLD_RULES

MODEL_CALIBRATIONS = ("none", "auto", "contextual", "temperature", "both")


@dataclass
class CascadePlan:
    """A calibrated acceptance rule: what ``write_config`` writes, and the evidence for it."""

    policy: str
    result: CalibrationResult
    weights: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, ModelCalibration] = field(default_factory=dict)
    alternatives: dict[str, CalibrationResult] = field(default_factory=dict)
    n_fit: int = 0
    n_test: int = 0

    @property
    def threshold(self) -> float | None:
        return self.result.threshold

    def max_feasible_target(self, data: CalibrationData, delta: float, method: str
                            ) -> float | None:
        """The highest target this rule (weights, calibration) could be certified for on
        ``data`` at ``delta``: the "by how much" when the asked target is out of reach (agreement
        scopes only)."""
        if self.result.scope == "non-inferior":
            return None
        scores, agree = rule_scores(data.with_reference(), self.policy, self.weights,
                                    self.calibration)
        return max_feasible_target(scores, agree, delta, method=method, scope=self.result.scope)

    def to_config(
        self, *, task: str, workers: Sequence[str], judge: str | None, early_exit: bool = False,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        certificate: Mapping[str, Any] | None = None,
    ) -> CascadeConfig:
        """The cascade.toml settings this plan certifies (checked like any config)."""
        return make_config({
            "task": task, "workers": list(workers), "judge": judge, "policy": self.policy,
            "threshold": self.threshold, "early_exit": early_exit, "weights": self.weights,
            "calibration": self.calibration_table(),
            "models": {k: dict(v) for k, v in (models or {}).items()},
            "certificate": {k: v for k, v in (certificate or {}).items() if v is not None},
        }, "calibrated settings")

    def calibration_table(self) -> dict[str, dict[str, Any]]:
        return {m: c.to_config() for m, c in self.calibration.items() if c.to_config()}

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "threshold": self.threshold,
            "result": self.result.to_json(),
            "weights": self.weights,
            "calibration": {m: {"offsets": c.offsets, "temperature": c.temperature,
                                "report": c.report} for m, c in self.calibration.items()},
            "alternatives": {k: v.to_json() for k, v in self.alternatives.items()},
            "n_fit": self.n_fit,
            "n_test": self.n_test,
        }


def fit_rule(
    fit_part: CalibrationData,
    policy: str,
    *,
    offsets: Mapping[str, Mapping[str, float]] | None = None,
    model_calibration: str = "none",
    seed: int = 0,
) -> tuple[dict[str, ModelCalibration], dict[str, float]]:
    """Per-model calibration and (for ``weighted``/``auto``) reliability weights, fitted on
    ``fit_part``; see :func:`plan_cascade` for the options."""
    if model_calibration not in MODEL_CALIBRATIONS:
        raise ValueError(f"unknown model calibration {model_calibration!r}")
    calibration: dict[str, ModelCalibration] = {}
    if model_calibration != "none":
        force_off, force_t = {
            "auto": (None, None),
            "contextual": (True, False),
            "temperature": (False, True),
            "both": (True, True),
        }[model_calibration]
        for w, name in enumerate(fit_part.workers):
            off = (offsets or {}).get(name)
            if force_off and not off:
                raise ValueError(f"{name}: contextual calibration asked for, but no offsets "
                                 "were measured for it")
            calibration[name] = choose_model_calibration(
                name, fit_part.worker_votes(w),
                [r or "" for r in fit_part.reference], fit_part.labels, off,
                use_offsets=force_off, use_temperature=force_t, seed=seed,
            )
    weights: dict[str, float] = {}
    if policy in ("weighted", "auto"):
        cal_votes = calibrated_votes(fit_part, calibration)
        weights = reliability_weights(
            {name: [row[w] for row in cal_votes] for w, name in enumerate(fit_part.workers)},
            fit_part.reference, len(fit_part.labels),
        )
    return calibration, weights


def plan_cascade(
    data: CalibrationData,
    target: float,
    delta: float,
    *,
    policy: str = "confident-majority",
    offsets: Mapping[str, Mapping[str, float]] | None = None,
    model_calibration: str = "none",
    fit_fraction: float | None = None,
    method: str = "fixed-sequence",
    grid: Sequence[float] | None = None,
    seed: int = 0,
    scope: Scope = "workers",
    fit_data: CalibrationData | None = None,
) -> CascadePlan:
    """Fit per-model calibration and weights, then certify a threshold for ``scope``.

    ``policy``: ``confident-majority``, ``weighted`` or ``auto`` (both, each certified at
    ``delta / 2`` so that picking the better one keeps the guarantee; the one with the larger
    coverage wins).  ``model_calibration``: ``none``, ``auto`` (per model, by measured effect),
    ``contextual``, ``temperature`` or ``both`` (forced for every model).  ``offsets``: measured
    contextual offsets per model (see :func:`contextual_offsets`).  ``fit_fraction``: share of
    the items used for fitting (default 0.3 when anything is fitted, else 0); the threshold is
    certified on the others.  ``fit_data``: items set aside for fitting by the caller (it fitted
    learning workers on them too); then ``data`` is certified on whole.  ``scope``: see
    :mod:`speculabel.certify.scope` (``non-inferior`` needs ``data.judge``, and ``target`` is
    the allowed accuracy loss).
    """
    if model_calibration not in MODEL_CALIBRATIONS:
        raise ValueError(f"unknown model calibration {model_calibration!r}")
    if policy not in (*THRESHOLD_RULES, "auto"):
        raise ValueError(f"unknown policy {policy!r}; choose {', '.join(THRESHOLD_RULES)} or "
                         "auto")
    if scope == "non-inferior" and data.judge is None:
        raise ValueError("the non-inferiority scope needs the judge's labels beside gold")
    data = data.with_reference()
    if len(data) == 0:
        raise ValueError("no calibration item has a reference label")
    if fit_data is not None:
        fit_part, test_part, n_fit = fit_data.with_reference(), data, len(fit_data)
    else:
        fits = model_calibration != "none" or policy in ("weighted", "auto")
        if fit_fraction is None:
            fit_fraction = 0.3 if fits else 0.0
        if not 0.0 <= fit_fraction < 1.0:
            raise ValueError(f"fit_fraction must be in [0, 1), got {fit_fraction}")
        order = list(range(len(data)))
        random.Random(seed).shuffle(order)
        n_fit = round(fit_fraction * len(data))
        fit_part = data.subset(sorted(order[:n_fit])) if n_fit else data
        test_part = data.subset(sorted(order[n_fit:])) if n_fit else data

    calibration, weights = fit_rule(
        fit_part, policy, offsets=offsets, model_calibration=model_calibration, seed=seed
    )

    candidates = ["confident-majority", "weighted"] if policy == "auto" else [policy]
    level = delta / len(candidates)
    results: dict[str, CalibrationResult] = {}
    for name in candidates:
        scores, agree = rule_scores(test_part, name, weights, calibration)
        res = calibrate_threshold(scores, agree, target, level, grid=grid, method=method,
                                  scope=scope, judge_right=test_part.judge_right())
        res.delta = delta  # report the overall level; each candidate ran at delta / len
        results[name] = res
    best = max(candidates, key=lambda n: (results[n].feasible, results[n].coverage,
                                          results[n].best_bound))
    return CascadePlan(
        policy=best,
        result=results[best],
        weights=weights if best == "weighted" else {},
        calibration=calibration,
        alternatives={n: r for n, r in results.items() if n != best},
        n_fit=n_fit,
        n_test=len(test_part),
    )
