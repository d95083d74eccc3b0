"""``learner:minilm``: MiniLM sentence embeddings + logistic regression, fitted on labels.

Spec: ``learner:minilm`` (optionally ``learner:minilm@DIR`` to keep it in ``DIR``).

Why: labels are free training data.  Every item the cascade escalates comes back with the
judge's label; ``calibrate`` can fit it on a share of its calibration items (judge or gold
labels).  It embeds the item with all-MiniLM-L6-v2 (about 5 ms a text on a CPU, 1/200 of a judge
call) and fits a logistic-regression head, so it costs almost nothing per item.  It votes from
``min_per_class`` labels of every class (8 by default), or at once after an explicit :meth:`fit`.

Its regularisation ``C`` and class weighting are chosen by cross-validation on the labels it is
fitted on (``C="auto"``, ``class_weight="auto"``, the defaults; see :mod:`.select`): a 3-label
task with a few hundred labels and a 77-intent task want very different heads.  So is the weight
of a nearest-neighbour vote mixed into the head (:mod:`.mixhead`; 0 when it does not help).

Pair tasks (two fields): each text is embedded on its own and the features are
``[a + b, |a - b|, a * b]`` (symmetric in the two texts), ``pair_mode="sym"``; ``"sep"`` embeds
``"text_a [SEP] text_b"`` as one text.  For pair tasks with few labels, ``similarity:minilm``
(one feature: the cosine) needs far fewer.

Shared behaviour (abstaining, retraining, freezing, persistence): :mod:`.base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speculabel.backends.base import BackendError
from speculabel.backends.learner.base import LearningWorker

PAIR_MODES = ("sym", "sep")
KEEP_FITS = 8  # fits kept for a second call on the same data (calibrate's chosen fit share)


class LearnerBackend(LearningWorker):
    """MiniLM + logistic regression (see the module docstring)."""

    KIND = "learner"
    OPTIONS = (*LearningWorker.OPTIONS, "pair_mode", "C", "class_weight")

    def __init__(
        self,
        spec: str = "learner:minilm",
        *,
        pair_mode: str = "sym",
        C: float | str = "auto",
        class_weight: str | None = "auto",
        **kw: Any,
    ) -> None:
        if pair_mode not in PAIR_MODES:
            raise BackendError(f"{spec}: pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
        if C != "auto" and (isinstance(C, str) or not float(C) > 0):
            raise BackendError(f"{spec}: C must be a positive number or \"auto\", got {C!r}")
        if class_weight not in (None, "balanced", "auto"):
            raise BackendError(f"{spec}: class_weight must be none, \"balanced\" or \"auto\", "
                               f"got {class_weight!r}")
        self.pair_mode = pair_mode
        self.C: float | str = C if C == "auto" else float(C)
        self.class_weight = class_weight
        #: what cross-validation chose at the last fit (None until then, or when nothing is auto)
        self.choice: Any = None
        self._fits: dict[str, tuple[Any, Any]] = {}  # the last fits, by their data (fit_model)
        self.pinned: Any = None  # settings chosen once for every next fit (pin_settings)
        super().__init__(spec, **kw)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "pair_mode": self.pair_mode}

    def features(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """Feature matrix for rows of field values (one text, or a pair)."""
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        width = len(rows[0])
        if width == 2 and self.pair_mode == "sym":
            a = self.embed([r[0] for r in rows])
            b = self.embed([r[1] for r in rows])
            return np.hstack([a + b, np.abs(a - b), a * b])
        if width == 1:
            return self.embed([r[0] for r in rows])
        return self.embed([" [SEP] ".join(r) for r in rows])

    def _settings_now(self) -> tuple[float, str | None]:
        """C and class weighting of the next head: fixed ones, else the last chosen, else the
        middle of the grid."""
        c = self.choice.C if self.choice is not None else 3.0
        cw = self.choice.class_weight if self.choice is not None else None
        return (c if self.C == "auto" else float(self.C),
                cw if self.class_weight == "auto" else self.class_weight)

    def new_head(self) -> Any:
        from speculabel.backends.learner.mixhead import MixedHead

        c, cw = self._settings_now()
        ch = self.choice
        return MixedHead(C=c, class_weight=cw, max_iter=2000,
                         knn_weight=getattr(ch, "knn_weight", 0.0),
                         temperature=getattr(ch, "temperature", 0.05))

    def _choose(self, x: np.ndarray, y: np.ndarray) -> Any:
        from speculabel.backends.learner.select import C_GRID, WEIGHTINGS, choose

        cs = C_GRID if self.C == "auto" else (float(self.C),)
        ws = WEIGHTINGS if self.class_weight == "auto" else (self.class_weight,)
        return choose(x, y, cs=cs, weightings=ws)

    def pin_settings(self, rows: Sequence[Sequence[str]] | None, labels: Sequence[str] = ()
                     ) -> None:
        """C, class weighting and the neighbour vote chosen by cross-validation on these rows,
        kept for every next fit (see :meth:`LearningWorker.pin_settings`)."""
        if rows is None or not (self.C == "auto" or self.class_weight == "auto"):
            self.pinned = None
            return
        y = np.array([str(v) for v in labels])
        self.pinned = self._choose(self.features(rows), y) if len(set(y)) >= 2 else None

    def other_heads(self) -> dict[str, Any]:
        """A plain logistic regression: the head that earlier versions saved (still loaded)."""
        from sklearn.linear_model import LogisticRegression

        return {"sklearn.linear_model._logistic.LogisticRegression":
                lambda: LogisticRegression(max_iter=2000)}

    def fit_model(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Choose what is ``"auto"`` by cross-validation on (x, y), then fit on all of it.

        The last few fits are kept by a hash of their data and settings: ``calibrate`` fits
        the chosen fit share's worker a second time (fitting is deterministic), and that costs
        nothing then."""
        import hashlib

        key = hashlib.sha256(repr((self.C, self.class_weight, self.pinned, x.shape,
                                   x.dtype.str)).encode()
                             + x.tobytes() + "\0".join(map(str, y)).encode()).hexdigest()
        if key in self._fits:
            self.choice, model = self._fits[key]
            return model
        if self.pinned is not None:
            self.choice = self.pinned
        elif self.C == "auto" or self.class_weight == "auto":
            self.choice = self._choose(x, y)
        model = self.new_head().fit(x, y)
        self._fits[key] = (self.choice, model)
        while len(self._fits) > KEEP_FITS:
            self._fits.pop(next(iter(self._fits)))
        return model


def from_spec(spec: str, **options: Any) -> LearningWorker:
    """The registry's factory (kept as a function for callers that import it)."""
    return LearnerBackend.from_spec(spec, **options)
