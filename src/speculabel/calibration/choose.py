"""Per-model calibration kept only where it measurably helps on the calibration items.

The contextual offsets stay when they raise accuracy against the reference significantly (a
one-sided sign test on the items whose label they change); the temperature stays when, fitted
on the other folds (scikit-learn's ``KFold``), it lowers held-out log-loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speculabel.calibration.offsets import flips
from speculabel.calibration.temperature import fit_temperature, logprob_matrix, nll
from speculabel.records import Vote


def sign_test_p(lost: int, changed: int) -> float:
    """One-sided sign test: ``P(Binomial(changed, 1/2) <= lost)``, small when the offsets fix
    far more items than they break (scipy's exact binomial test)."""
    from scipy.stats import binomtest

    return float(binomtest(lost, changed, 0.5, alternative="less").pvalue)


@dataclass
class ModelCalibration:
    """What :func:`choose_model_calibration` keeps for one model, and the measurements behind it."""

    model: str
    offsets: dict[str, float] | None = None
    temperature: float = 1.0
    report: dict[str, Any] = field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        """The ``[calibration."model"]`` table (empty when nothing is kept)."""
        out: dict[str, Any] = {}
        if self.temperature != 1.0:
            out["temperature"] = float(self.temperature)
        if self.offsets:
            out["offsets"] = {k: float(v) for k, v in self.offsets.items()}
        return out


def _cv_eval(
    votes: Sequence[Vote],
    reference: Sequence[str],
    labels: Sequence[str],
    offsets: Mapping[str, float] | None,
    folds: int,
    seed: int,
) -> dict[str, float]:
    """Held-out accuracy, log-loss at T=1 and log-loss with T fitted on the other folds."""
    idx = {lab: j for j, lab in enumerate(labels)}
    keep = [i for i, (v, r) in enumerate(zip(votes, reference, strict=True))
            if v.label is not None and v.probs and r in idx]
    if len(keep) < 2 * folds:
        folds = max(2, len(keep) // 2) if len(keep) >= 4 else 1
    logits = logprob_matrix([votes[i] for i in keep], labels, offsets)
    y = np.array([idx[reference[i]] for i in keep])
    if len(keep) == 0:
        return {"n": 0, "accuracy": 0.0, "nll": float("inf"), "nll_ts": float("inf"),
                "temperature": 1.0}
    acc = float(np.mean(logits.argmax(axis=1) == y))
    nll1 = nll(logits, y, 1.0)
    if folds < 2:
        return {"n": len(keep), "accuracy": acc, "nll": nll1, "nll_ts": nll1, "temperature": 1.0}
    from sklearn.model_selection import KFold

    held = []
    for tr, te in KFold(n_splits=folds, shuffle=True, random_state=seed).split(keep):
        t = fit_temperature([votes[keep[i]] for i in tr], [reference[keep[i]] for i in tr],
                            labels, offsets)
        held.append(nll(logits[te], y[te], t) * len(te))
    t_all = fit_temperature([votes[i] for i in keep], [reference[i] for i in keep], labels,
                            offsets)
    return {"n": len(keep), "accuracy": acc, "nll": nll1,
            "nll_ts": float(sum(held) / len(keep)), "temperature": t_all}


def choose_model_calibration(
    model: str,
    votes: Sequence[Vote],
    reference: Sequence[str],
    labels: Sequence[str],
    offsets: Mapping[str, float] | None = None,
    *,
    use_offsets: bool | None = None,
    use_temperature: bool | None = None,
    folds: int = 5,
    seed: int = 0,
    significance: float = 0.1,
) -> ModelCalibration:
    """Keep contextual offsets and/or a temperature for one model only where they help.

    ``use_offsets`` / ``use_temperature``: True forces, False forbids, None (default) decides by
    measured effect: the offsets stay when they raise accuracy against the reference
    significantly (one-sided sign test on the items whose label they change, at
    ``significance``); the
    temperature stays when, fitted on the other folds, it lowers held-out log-loss.  Accuracy is
    in-sample for the offsets (they are fitted on content-free inputs, not on these labels).
    """
    raw = _cv_eval(votes, reference, labels, None, folds, seed)
    report: dict[str, Any] = {"raw": raw}
    keep_off = False
    if offsets:
        cc = _cv_eval(votes, reference, labels, offsets, folds, seed)
        report["contextual"] = cc
        gained, lost = flips(votes, reference, offsets)
        p = sign_test_p(lost, gained + lost) if gained > lost else 1.0
        cc["fixed"], cc["broke"], cc["sign_test_p"] = gained, lost, p
        # by default, a paired sign test on the items it changes: an accuracy gain on a small
        # fit set is often noise, and a wrong offset costs every later item
        keep_off = p <= significance if use_offsets is None else use_offsets
    elif use_offsets:
        raise ValueError(f"{model}: contextual calibration asked for, but no offsets measured")
    chosen = report["contextual"] if keep_off else raw
    better = chosen["nll_ts"] < chosen["nll"] - 1e-4
    keep_t = better if use_temperature is None else use_temperature
    temperature = float(chosen["temperature"]) if keep_t else 1.0
    report["kept"] = {"offsets": keep_off, "temperature": keep_t}
    return ModelCalibration(model, dict(offsets) if keep_off and offsets else None, temperature,
                            report)
