"""Certification from Python: :func:`calibrate` takes the user's own models and labels.

The CLI's ``calibrate`` reads a table and names models by spec; this takes
:class:`~speculabel.backends.base.Backend` objects (a ``FunctionBackend``, a fine-tuned model of
the user's, or specs), any inputs :meth:`Cascade.predict` takes, and reference labels (gold, or
the judge's; or ``judge=`` to ask it), and runs the same fit-then-certify core
(:func:`speculabel.certify.workflow.fit_and_certify`).  The :class:`Certificate` it returns says
exactly what is guaranteed, builds the certified cascade and saves it as a cascade.toml.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speculabel.backends.base import Backend
from speculabel.errors import SpeculabelError
from speculabel.records import Item
from speculabel.tasks import Task

if TYPE_CHECKING:
    from speculabel.cascade.run import Cascade
    from speculabel.certify.workflow import Calibration

SCOPE_NAMES = ("dataset", "workers", "non-inferior")


class CalibrationError(SpeculabelError, ValueError):
    """Settings or labels that cannot certify anything (named in the message)."""


@dataclass
class Certificate:
    """What :func:`calibrate` certified, for the workers it fitted.

    ``threshold`` is None when nothing could be certified (then ``statement`` says by how much
    it fell short, and :meth:`cascade` sends every item to the judge).
    """

    task: Task
    workers: list[Backend]
    calibration: Calibration
    scope: str
    target: float
    delta: float
    reference: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float | None:
        res = self.calibration.plan.result
        return res.threshold if res.feasible else None

    @property
    def policy(self) -> str:
        return self.calibration.plan.policy

    @property
    def statement(self) -> str:
        """The exact sentence the CLI prints: what is guaranteed, over what draw, at what
        delta; or why nothing was certified."""
        res = self.calibration.plan.result
        return res.promise() if res.feasible else res.message()

    @property
    def notes(self) -> list[str]:
        """What else to know: the fit share chosen, labels a learner never saw."""
        return list(self.calibration.notes)

    @property
    def judge_call_rate(self) -> float | None:
        res = self.calibration.plan.result
        return res.judge_call_rate if res.feasible else None

    def cascade(self, judge: Backend | None, **kwargs: Any) -> Cascade:
        """The certified cascade: these (fitted, frozen) workers, the certified rule and
        threshold, and ``judge`` for the rest."""
        from speculabel.cascade.run import Cascade
        from speculabel.policy import make_policy

        plan = self.calibration.plan
        thr = self.threshold
        policy = make_policy(plan.policy, 1.01 if thr is None else thr, weights=plan.weights)
        cal = {m: c.to_config() for m, c in plan.calibration.items() if c.to_config()}
        return Cascade(self.task, self.workers, judge, policy, calibration=cal, **kwargs)

    def save(self, path: str | Path, *, judge: str | None = None,
             task: str | None = None) -> Path:
        """Write a cascade.toml that ``speculabel classify --config`` runs: fitted learning
        workers go into ``STEM.fitted/`` beside it, frozen.  Workers of your own (a
        ``FunctionBackend``) are named by their spec: register them (entry point
        ``speculabel.backends``) to run the file from the CLI.  ``task``: how the config names
        the task (a TOML file's path) when not by its built-in name."""
        from speculabel.backends.base import unwrap
        from speculabel.backends.learner.base import LearningWorker
        from speculabel.cascade.config import save_config

        if self.threshold is None:
            raise CalibrationError(f"nothing to save: {self.statement}")
        out = Path(path)
        fitted = out.with_name(f"{out.stem}.fitted")
        models: dict[str, dict[str, Any]] = {}
        for w in self.workers:
            inner = unwrap(w)
            if isinstance(inner, LearningWorker):
                folder = fitted / inner.spec.partition("@")[0].replace(":", "-")
                inner.save_to(folder)
                models[inner.spec] = {"directory": str(folder.resolve()), "frozen": True}
        res = self.calibration.plan.result
        cfg = self.calibration.plan.to_config(
            task=task or self.task.name, workers=[w.spec for w in self.workers], judge=judge,
            models=models, certificate={
                "scope": self.scope, "target": self.target, "delta": self.delta,
                "reference": self.reference, "fit_items": self.calibration.n_fit,
                "certify_items": self.calibration.n_certify, "threshold": res.threshold,
                "expected_judge_call_rate": round(res.judge_call_rate, 4),
                "promise": res.promise()})
        return save_config(cfg, out, f"written by speculabel.calibrate()\nguarantee: "
                                     f"{res.promise()}")


def calibrate(
    *,
    task: Task | str,
    workers: Sequence[Backend | str],
    items: Iterable[Any],
    references: Sequence[str | None] | None = None,
    judge: Backend | str | None = None,
    judge_labels: Sequence[str | None] | None = None,
    scope: str = "dataset",
    target: float = 0.85,
    delta: float = 0.1,
    policy: str | None = None,
    fit_fraction: float | str | Sequence[float] | None = None,
    method: str = "fixed-sequence",
    seed: int = 0,
    buy: str = "all",
    first: int | None = None,
    volume: int | None = None,
) -> Certificate:
    """Certify a threshold for these workers on these items.

    ``references``: a reference label per item (gold, or the judge's); without them, ``judge``
    is asked.  ``scope``: ``dataset`` (agreement with the judge over the whole data set >=
    ``target``, judge-decided items agreeing: ``references`` are taken as the judge's labels),
    ``workers`` (agreement with the references on the workers' share >= ``target``) or
    ``non-inferior`` (gold accuracy of the cascade >= the judge's - ``target``: ``references``
    are gold, and the judge's labels come from ``judge_labels`` or ``judge``).  Learning workers
    are fitted on a ``fit_fraction`` share and certified on the rest, with probability at least
    1 - ``delta`` over the draw of the items; ``fit_fraction="auto"`` (the default when a worker
    learns) tries the shares of :data:`speculabel.certify.fitsplit.CANDIDATES` (or of
    ``MANY_LABEL_CANDIDATES``, for a task of many labels) at ``delta / m`` each and keeps the
    best (see :mod:`speculabel.certify.fitsplit`).

    ``buy="sequential"`` (with ``judge`` and no labels): the judge labels a growing random
    sample (``first`` items, doubled at each look) until more labels stop adding certified
    coverage (weighed against ``volume``, the items you will classify, when given), at
    ``delta`` over all looks (see :mod:`speculabel.certify.buying`); the
    certificate's ``extra`` says how many labels were bought.
    """
    from speculabel.backends.base import unwrap
    from speculabel.backends.learner.base import LearningWorker
    from speculabel.backends.registry import load_backend
    from speculabel.cascade.surface import as_items
    from speculabel.certify.fitsplit import certify_best_split, fractions_of
    from speculabel.certify.workflow import fit_and_certify
    from speculabel.tasks import load_task

    the_task = load_task(task) if isinstance(task, str) else task
    if scope not in SCOPE_NAMES:
        raise CalibrationError(f"scope must be one of {', '.join(SCOPE_NAMES)}, got {scope!r}")
    if scope == "non-inferior" and not 0 <= target < 1:
        raise CalibrationError(f"non-inferior: target is the allowed accuracy loss, in [0, 1); "
                               f"got {target:g}")
    if scope != "non-inferior" and not 0 < target < 1:
        raise CalibrationError(f"target must be strictly between 0 and 1, got {target:g}")
    if not 0 < delta < 1:
        raise CalibrationError(f"delta must be strictly between 0 and 1, got {delta:g}")
    models = [load_backend(w) if isinstance(w, str) else w for w in workers]
    if not 1 <= len(models) <= 3:
        raise CalibrationError(f"one to three workers, got {len(models)}")
    judge_b = load_backend(judge) if isinstance(judge, str) else judge
    its: list[Item] = list(as_items(the_task, items))
    n = len(its)
    if n == 0:
        raise CalibrationError("no items to calibrate on")
    for name, labs in (("references", references), ("judge_labels", judge_labels)):
        if labs is not None and len(labs) != n:
            raise CalibrationError(f"{name}: {len(labs)} labels for {n} items")

    if buy not in ("all", "sequential"):
        raise CalibrationError(f"buy must be 'all' or 'sequential', got {buy!r}")
    if buy == "sequential":
        from speculabel.certify.buying import FIRST, calibrate_buying

        if judge_b is None or references is not None or judge_labels is not None:
            raise CalibrationError("buy='sequential' buys the judge's labels: give judge= and "
                                   "no references= / judge_labels=")
        bought: Certificate = calibrate_buying(
            calibrate, CalibrationError, the_task, models, its, judge_b, scope=scope,
            target=target, delta=delta, first=FIRST if first is None else first, volume=volume,
            seed=seed, policy=policy, fit_fraction=fit_fraction, method=method)
        return bought

    def asked() -> list[str | None]:
        if judge_b is None:
            raise CalibrationError(f"scope {scope!r} needs the judge's labels: give judge= "
                                   "(or references= / judge_labels=)")
        return [v.label for v in judge_b.score(the_task, its)]

    gold: list[str | None] | None = None
    if scope == "non-inferior":
        if references is None:
            raise CalibrationError("non-inferior compares with gold: give references= (gold)")
        gold = list(references)
        jl: list[str | None] | None = list(judge_labels) if judge_labels is not None else asked()
        ref = list(gold)
        reference = "gold"
    else:
        ref = list(references) if references is not None else (
            list(judge_labels) if judge_labels is not None else asked())
        jl = list(ref) if scope == "dataset" else (list(judge_labels) if judge_labels else None)
        reference = "judge" if references is None or scope == "dataset" else "reference labels"
    ref = [r if r in the_task.label_names else None for r in ref]
    if len({r for r in ref if r is not None}) < 2:
        raise CalibrationError("the reference labels hold fewer than two classes: nothing can "
                               "be learnt or certified from them")

    learners = {w.spec: w for w in models if isinstance(unwrap(w), LearningWorker)}
    rule = policy or "confident-majority"
    fits = bool(learners) or rule in ("weighted", "auto")
    try:
        fracs = fractions_of("auto" if fit_fraction is None and learners else fit_fraction,
                             0.3 if fits else 0.0, len(the_task.label_names))
    except ValueError as e:
        raise CalibrationError(str(e)) from None
    if learners and 0.0 in fracs:
        raise CalibrationError(f"fit_fraction must be in (0, 1) when a worker learns, in [0, 1) "
                               f"otherwise; got {fit_fraction}")
    got = {w.spec: w.score(the_task, its) for w in models if w.spec not in learners}

    def run(fit_idx: list[int], cert_idx: list[int], level: float) -> Calibration:
        def fitter(w: Backend) -> Any:
            def make() -> LearningWorker:
                inner = unwrap(w)
                assert isinstance(inner, LearningWorker)
                inner.check_task(the_task)  # its labels are the task's, seen in the fit or not
                pairs = [(inner.row_of(its[i]), ref[i]) for i in fit_idx if ref[i] is not None]
                inner.frozen = False
                inner.fit([r for r, _ in pairs], [str(lab) for _, lab in pairs])
                inner.frozen = True
                return inner
            return make

        return fit_and_certify(
            the_task, its, [w.spec for w in models], dict(got),
            {spec: fitter(w) for spec, w in learners.items()}, ref, gold, jl, fit_idx, cert_idx,
            target=target, delta=level, scope=scope, reference=reference,  # type: ignore[arg-type]
            policy=rule, method=method, seed=seed)

    def tune(core: list[int]) -> None:
        for w in learners.values():
            inner = unwrap(w)
            assert isinstance(inner, LearningWorker)
            inner.check_task(the_task)
            keep = [i for i in core if ref[i] is not None]
            inner.pin_settings([inner.row_of(its[i]) for i in keep], [str(ref[i]) for i in keep])

    try:
        cal = certify_best_split(n, fracs, seed, delta, run, tune if learners else None)
    finally:
        for w in learners.values():
            inner = unwrap(w)
            assert isinstance(inner, LearningWorker)
            inner.pin_settings(None)
    return Certificate(the_task, models, cal, scope, target, delta, reference)
