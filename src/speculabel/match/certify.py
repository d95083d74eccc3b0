"""A guarantee on the matches a run reports: precision of the workers' matches, certified.

``calibrate(scope="workers")`` certifies agreement on *every* pair the workers decide, matches
and non-matches together; what a support team needs is narrower: of the pairs the workers call
``similar``, how many are.  :func:`certify_matches` runs the same exact test (the certify
machinery, scope ``workers``, fixed-sequence from strict to loose thresholds) on the
calibration pairs the workers *accept as matches* only: a pair the workers would call
``not_similar`` never counts, at any threshold.  The certified threshold then bounds the
precision of the workers' matches, whatever the rule does with non-matches.

What it covers, exactly: with probability at least ``1 - delta`` over the draw of the
calibration pairs, the precision (against the reference: gold, or the judge) of the matches the
workers accept at the threshold is at least ``target`` **for pairs drawn like the calibration
pairs** (candidate pairs of queues like the run's, with the same ``k`` and floor).  It says
nothing about the judge's own matches beyond agreeing with the judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speculabel.backends.base import Backend
from speculabel.records import Item
from speculabel.tasks import Task

if TYPE_CHECKING:
    import numpy as np

    from speculabel.cascade.run import Cascade
    from speculabel.certify.threshold import CalibrationResult

SCOPE = "match-precision"


@dataclass
class MatchCertificate:
    """The certified threshold (None when nothing could be certified) and what it promises."""

    task: Task
    workers: list[Backend]
    result: CalibrationResult
    reference: str
    label: str = "similar"

    @property
    def threshold(self) -> float | None:
        return self.result.threshold if self.result.feasible else None

    @property
    def promise(self) -> str:
        r = self.result
        return (f"precision >= {r.target:g} (against {self.reference}) of the matches the "
                f"workers report, with probability >= {1 - r.delta:g} over the draw of the "
                f"{r.n_items} calibration pairs, for candidate pairs drawn like them")

    @property
    def statement(self) -> str:
        r = self.result
        if not r.feasible:
            return f"nothing certified: {r.message()}"
        return (f"threshold {r.threshold:g}: {self.promise} (the workers call "
                f"{100 * r.coverage:.1f}% of the calibration pairs matches at it; measured "
                f"precision {self._pct(r.estimate)}, certified lower bound {self._pct(r.bound)})")

    @staticmethod
    def _pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {"scope": SCOPE, "target": r.target, "delta": r.delta,
                "reference": self.reference, "certify_items": r.n_items,
                "threshold": self.threshold, "promise": self.promise,
                "statement": self.statement}

    def cascade(self, judge: Backend | None, reject: float | None = None,
                **kwargs: Any) -> Cascade:
        """The certified cascade: these workers report a match at the certified threshold
        (never, when nothing was certified) and drop one at ``reject`` (default: the same
        threshold), the judge decides the rest (:class:`speculabel.match.policy.MatchRule`)."""
        from speculabel.cascade.run import Cascade
        from speculabel.match.policy import MatchRule

        thr = 1.0 if self.threshold is None else self.threshold
        rule = MatchRule(thr, thr if reject is None else reject, self.label)
        if self.threshold is None:
            rule.threshold = 1.01  # above any confidence: the workers never report a match
        return Cascade(self.task, self.workers, judge, rule, **kwargs)

    def save(self, path: str | Path, *, judge: str | None = None,
             reject: float | None = None, judge_budget: float | None = None) -> Path:
        """A cascade.toml for ``speculabel match --config``: learning workers frozen into
        ``STEM.fitted/`` beside it, the certificate in ``[certificate]`` (with the ``reject``
        level and the ``judge_budget`` the match command then uses by default)."""
        from speculabel.backends.base import unwrap
        from speculabel.backends.learner.base import LearningWorker
        from speculabel.cascade.config import make_config, save_config

        if self.threshold is None:
            raise ValueError(f"nothing to save: {self.statement}")
        out = Path(path)
        models: dict[str, dict[str, Any]] = {}
        for w in self.workers:
            inner = unwrap(w)
            if isinstance(inner, LearningWorker):
                folder = out.with_name(f"{out.stem}.fitted") / inner.spec.partition("@")[0].replace(":", "-")
                inner.save_to(folder)
                models[inner.spec] = {"directory": str(folder.resolve()), "frozen": True}
        cfg = make_config({
            "task": self.task.name, "workers": [w.spec for w in self.workers], "judge": judge,
            "policy": "confident-majority", "threshold": self.threshold, "models": models,
            "certificate": {k: v for k, v in {**self.to_json(), "reject": reject,
                                                 "judge_budget": judge_budget}.items()
                            if v is not None},
        }, "certified match settings")
        return save_config(cfg, out, f"written by speculabel.match.certify_matches()\n"
                                     f"guarantee: {self.promise}")


def match_scores(task: Task, workers: Sequence[Backend], pairs: Sequence[Item],
                 label: str = "similar") -> tuple[np.ndarray, list[str | None]]:
    """Each pair's support under ``confident-majority`` and the workers' label; ``-inf`` where
    the workers would not call it a match (then no threshold counts it)."""
    import numpy as np

    from speculabel.certify.scores import make_calibrated_policy, policy_scores

    cols = [w.score(task, list(pairs)) for w in workers]
    votes = [[col[i] for col in cols] for i in range(len(pairs))]
    scores, labels = policy_scores(make_calibrated_policy("confident-majority"), votes,
                                   len(workers))
    scores = np.where(np.array([lab == label for lab in labels], dtype=bool), scores, -np.inf)
    return scores, labels


def certify_matches(
    task: Task,
    workers: Sequence[Backend],
    pairs: Sequence[Item],
    references: Sequence[str | None],
    *,
    target: float = 0.93,
    delta: float = 0.1,
    reference: str = "gold",
    label: str = "similar",
) -> MatchCertificate:
    """Certify the loosest threshold at which the precision of the workers' matches is at
    least ``target`` w.p. ``1 - delta`` (workers already fitted: certify on pairs they were
    not fitted on)."""
    from speculabel.certify.scores import agreement_flags
    from speculabel.certify.threshold import calibrate_threshold

    if len(references) != len(pairs):
        raise ValueError(f"{len(references)} references for {len(pairs)} pairs")
    scores, labels = match_scores(task, workers, pairs, label)
    agree = agreement_flags(labels, references)
    result = calibrate_threshold(scores, agree, target, delta, scope="workers")
    return MatchCertificate(task, list(workers), result, reference, label)
