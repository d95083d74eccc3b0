"""The whole of ``speculabel calibrate``: fit on one share of the items, certify on the rest.

1. The calibration items are split once, at random (seeded): a *fit* share and a *certify*
   share.  Nothing fitted ever sees a certify item, so the certificate is untouched by fitting.
2. Every model's vote on every item comes from the vote store (computed where missing).
3. Workers that learn (``learner:minilm``, ``similarity:minilm``) are fitted on the fit share's
   reference labels (the judge's, or gold), saved into their own folder under ``fitted_dir`` and
   *frozen* there: ``classify --config`` loads exactly that state, so the certified threshold
   applies to the workers that run.  Their votes on the fit share are out-of-fold (a worker
   scored on items it was trained on looks better than it is); on the certify share they are
   the frozen worker's votes.
4. Temperatures and reliability weights are fitted on the fit share too
   (:func:`speculabel.certify.plan.plan_cascade`), and the threshold is certified on the
   certify share for the chosen scope.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.backends.learner.base import LearningWorker
from speculabel.certify.fitsplit import certify_best_split, fractions_of, split
from speculabel.certify.outcome import Calibration
from speculabel.certify.plan import plan_cascade
from speculabel.certify.scope import Scope
from speculabel.certify.scores import CalibrationData
from speculabel.records import Item, Vote
from speculabel.tasks import Task

LEARNING_KINDS = ("learner", "similarity")
Progress = Callable[[str, int, int], None]


def learning(spec: str) -> bool:
    """Is this a worker that learns?  (A spec the registry does not know is not.)"""
    from speculabel.backends.base import BackendError
    from speculabel.backends.registry import kind_of

    try:
        return kind_of(spec) in LEARNING_KINDS
    except BackendError:
        return False


__all__ = ["Calibration", "calibrate", "fit_and_certify", "learning", "split"]


def fit_learner(
    spec: str,
    task: Task,
    fit_items: Sequence[Item],
    fit_labels: Sequence[str | None],
    folder: Path,
    options: Mapping[str, Any] | None = None,
    pinned: Any = None,
) -> LearningWorker:
    """A learning worker fitted on these labels, saved (and frozen) in ``folder`` (with
    ``pinned``: the settings chosen beforehand, see ``LearningWorker.pin_settings``)."""
    from speculabel.backends.base import BackendError
    from speculabel.backends.registry import load_backend

    if folder.exists():
        shutil.rmtree(folder)
    opts = {k: v for k, v in (options or {}).items() if k not in ("directory", "frozen")}
    worker = load_backend(spec.partition("@")[0], **opts)
    if not isinstance(worker, LearningWorker):
        raise BackendError(f"{spec} is not a worker that learns")
    worker.check_task(task)
    worker.pinned = pinned
    pairs = [(worker.row_of(it), lab) for it, lab in zip(fit_items, fit_labels, strict=True)
             if lab is not None]
    if len({lab for _, lab in pairs}) < 2:
        raise BackendError(f"{spec}: the fit share has labels of fewer than two classes; use "
                           "more calibration items or a larger --fit-fraction")
    worker.fit([r for r, _ in pairs], [lab for _, lab in pairs])
    worker.save_to(folder)
    worker.frozen = True
    return worker


def cross_val_proba(worker: LearningWorker, rows: Sequence[Sequence[str]],
                    labels: Sequence[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities (in the worker's label order) of a head like the worker's,
    each row scored by a head fitted on the other folds: honest scores for items the worker was
    trained on (a certificate must never use in-sample scores)."""
    from sklearn.model_selection import StratifiedKFold

    assert worker.labels is not None
    x = worker.features(rows)
    y = np.array(labels)
    out = np.full((len(y), len(worker.labels)), 1.0 / len(worker.labels))
    n_splits = min(folds, *np.unique(y, return_counts=True)[1]) if len(y) else 0
    if n_splits < 2:
        return out
    for tr, te in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y):
        if len(set(y[tr])) >= 2:
            out[te] = worker.head_proba(worker.new_head().fit(x[tr], y[tr]), x[te])
    return out


def out_of_fold_votes(worker: LearningWorker, task: Task, items: Sequence[Item],
                      labels: Sequence[str | None], seed: int) -> list[Vote]:
    """A fitted worker's honest votes on its own training items (5-fold cross-fitting);
    an item without a label gets the worker's plain vote."""
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    probs = cross_val_proba(worker, [worker.row_of(items[i]) for i in keep],
                            [str(labels[i]) for i in keep], 5, seed)
    out: list[Vote] = list(worker.score(task, items))
    for row, i in zip(probs, keep, strict=True):
        labels_ = worker.labels or []
        out[i] = Vote.from_probs(worker.spec, dict(zip(labels_, (float(p) for p in row),
                                                       strict=True)), method="classifier")
    return out


def calibrate(
    task: Task,
    items: Sequence[Item],
    gold: Sequence[str | None] | None,
    workers: Sequence[str],
    judge: str,
    *,
    store: Any,
    fitted_dir: Path,
    target: float,
    delta: float,
    scope: Scope = "dataset",
    reference: str = "judge",
    policy: str = "confident-majority",
    model_calibration: str = "none",
    offsets: Mapping[str, Mapping[str, float]] | None = None,
    fit_fraction: float | str | Sequence[float] | None = None,
    method: str = "fixed-sequence",
    seed: int = 0,
    backend_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
) -> Calibration:
    """The workflow of the module docstring; raises ``ValueError`` / ``BackendError`` for
    settings that cannot work (the CLI turns them into exit status 2)."""
    from speculabel.certify.votes import collect_votes

    if reference == "gold" and gold is None:
        raise ValueError("--reference gold needs gold labels (--gold-column, or a data set)")
    if scope == "non-inferior" and gold is None:
        raise ValueError("the non-inferiority target needs gold labels (--gold-column)")
    if scope == "dataset" and reference == "gold":
        raise ValueError("--scope dataset counts judge-decided items as agreeing, so its "
                         "reference is the judge; with gold labels use --non-inferior EPS")
    learners = [w for w in workers if learning(w)]
    fits = bool(learners) or model_calibration != "none" or policy in ("weighted", "auto")
    if fit_fraction is None and learners:
        fit_fraction = "auto"
    try:
        fractions = fractions_of(fit_fraction, 0.3 if fits else 0.0, len(task.label_names))
    except ValueError as e:
        raise ValueError(f"--fit-fraction: {e}") from None
    if learners and 0.0 in fractions:
        raise ValueError(f"{', '.join(learners)} must be fitted: give --fit-fraction > 0")

    needs_judge = reference == "judge" or scope == "non-inferior"
    fixed = [w for w in workers if not learning(w)] + ([judge] if needs_judge else [])
    got: dict[str, list[Vote]] = collect_votes(task, items, fixed, store, progress=progress,
                                               backend_options=backend_options)
    judge_labels = [v.label for v in got[judge]] if needs_judge else None
    ref: list[str | None]
    if reference == "judge":
        assert judge_labels is not None
        ref = list(judge_labels)
    else:
        assert gold is not None
        ref = [g if g in task.label_names else None for g in gold]

    fitted = {spec: fitted_dir / spec.partition("@")[0].replace(":", "-") for spec in learners}
    pinned: dict[str, Any] = {}

    def tune(core: list[int]) -> None:
        from speculabel.backends.registry import load_backend

        keep = [i for i in core if ref[i] is not None]
        for spec in learners:
            opts = {k: v for k, v in ((backend_options or {}).get(spec) or {}).items()
                    if k not in ("directory", "frozen")}
            worker = load_backend(spec.partition("@")[0], **opts)
            assert isinstance(worker, LearningWorker)
            worker.check_task(task)
            worker.pin_settings([worker.row_of(items[i]) for i in keep],
                                [str(ref[i]) for i in keep])
            pinned[spec] = worker.pinned

    def run(fit_idx: list[int], cert_idx: list[int], level: float) -> Calibration:
        fitters: dict[str, Callable[[], LearningWorker]] = {}
        for spec in learners:
            def fitter(spec: str = spec) -> LearningWorker:
                return fit_learner(spec, task, [items[i] for i in fit_idx],
                                   [ref[i] for i in fit_idx], fitted[spec],
                                   (backend_options or {}).get(spec), pinned.get(spec))

            fitters[spec] = fitter
        return fit_and_certify(
            task, items, list(workers), dict(got), fitters, ref, gold, judge_labels, fit_idx,
            cert_idx, target=target, delta=level, scope=scope, reference=reference,
            policy=policy, model_calibration=model_calibration, offsets=offsets, method=method,
            seed=seed, fitted=fitted, progress=progress, close_learners=True)

    return certify_best_split(len(items), fractions, seed, delta, run,
                              tune if learners else None)


def fit_and_certify(
    task: Task,
    items: Sequence[Item],
    workers: list[str],
    got: dict[str, list[Vote]],
    fitters: Mapping[str, Callable[[], LearningWorker]],
    ref: list[str | None],
    gold: Sequence[str | None] | None,
    judge_labels: list[str | None] | None,
    fit_idx: list[int],
    cert_idx: list[int],
    *,
    target: float,
    delta: float,
    scope: Scope,
    reference: str,
    policy: str,
    model_calibration: str = "none",
    offsets: Mapping[str, Mapping[str, float]] | None = None,
    method: str = "fixed-sequence",
    seed: int = 0,
    fitted: dict[str, Path] | None = None,
    progress: Progress | None = None,
    close_learners: bool = False,
) -> Calibration:
    """The core shared by the CLI and the Python :func:`speculabel.calibrate`: each learning
    worker is fitted on the fit share (``fitters[spec]()``), scored out-of-fold there and frozen
    on the certify share; then the rule is planned and its threshold certified on the certify
    share.  ``got`` holds every other worker's votes (and is completed with the learners').

    The learners' votes on the fit share are needed (and computed, out-of-fold) only when
    something is fitted on them: per-model calibration, or reliability weights."""
    notes: list[str] = []
    fit_votes = model_calibration != "none" or policy in ("weighted", "auto")
    for spec, make in fitters.items():
        worker = make()
        try:
            votes: list[Vote] = [Vote.abstain(spec, "unscored")] * len(items)
            unseen = worker.unseen_labels()
            if unseen:
                notes.append(
                    f"{spec} had no fit example of {len(unseen)} of {len(task.label_names)} "
                    f"labels ({', '.join(unseen[:5])}{', ...' if len(unseen) > 5 else ''}): it "
                    "never predicts them; their items count as its disagreements in the "
                    "certificate, and only a low score sends them to the judge")
            if fit_votes:
                oof = out_of_fold_votes(worker, task, [items[i] for i in fit_idx],
                                        [ref[i] for i in fit_idx], seed)
                for i, v in zip(fit_idx, oof, strict=True):
                    votes[i] = v
            cert = worker.score(task, [items[i] for i in cert_idx])
            for i, v in zip(cert_idx, cert, strict=True):
                votes[i] = v
            got[spec] = votes
        finally:
            if close_learners:
                worker.close()
        if progress:
            progress(spec, len(items), len(items))

    data = CalibrationData(
        labels=task.label_names, workers=list(workers),
        votes=[list(row) for row in zip(*(got[w] for w in workers), strict=True)],
        reference=ref, ids=[it.id for it in items], judge=judge_labels,
    )
    fit_part = data.subset(fit_idx) if fit_idx else None
    cert_part = data.subset(cert_idx)
    plan = plan_cascade(
        cert_part, target, delta, policy=policy, offsets=offsets,
        model_calibration=model_calibration, method=method, seed=seed, scope=scope,
        fit_data=fit_part, fit_fraction=0.0 if fit_part is None else None,
    )
    judge_acc = None
    if gold is not None and judge_labels is not None:
        pairs = [(judge_labels[i], gold[i]) for i in cert_idx if gold[i] is not None]
        judge_acc = sum(j == g for j, g in pairs) / len(pairs) if pairs else None
    n = len(fit_idx) + len(cert_idx)
    return Calibration(plan, len(fit_idx), len(cert_idx), reference, dict(fitted or {}),
                       judge_acc, cert_part, notes, len(fit_idx) / n if n else None)
