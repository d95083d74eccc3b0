"""Calibrate without labelling everything: buy the judge's labels at growing sample sizes.

``calibrate(..., judge=J, buy="sequential")`` does not ask the judge about every calibration
item. It draws the items in a seeded random order and declares ``K`` looks in advance, at
sample sizes ``first, 2 first, 4 first, ...`` up to all ``N`` items. At look ``j`` it buys the
judge's labels of the items not yet labelled in the first ``m_j`` of that order and runs the
ordinary fit-then-certify (:func:`speculabel.certify.api.calibrate`) on those ``m_j`` items at
``delta / K``. It stops at ``N``, or after the first look whose gain in certified coverage
over the best look before does not pay for the next look's labels: with ``volume`` (the items
the cascade will classify afterwards) when ``gain x volume`` is less than the next look's new
labels times the coverage (a label bought for an item the judge would decide anyway costs
nothing); without it, when the gain is below ``min_gain``. It returns the look with the most
coverage.

Why this stays valid: the first ``m_j`` items of a uniform random order are a uniform random
sample of the calibration items, so look ``j``'s certificate holds with probability at least
``1 - delta / K`` over that draw, exactly as a full calibration on ``m_j`` items would; by the
union bound all ``K`` planned looks hold together with probability at least ``1 - delta``, so
stopping early and keeping the best look (both chosen from the data) cost nothing more. The
statement is the chosen look's, at ``delta`` overall.

Workers that do not learn are asked once per item (their votes are memoised for the run);
learning workers are fitted again at every look (on that look's fit share).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from speculabel.backends.base import Backend, unwrap
from speculabel.backends.cached import CachedBackend
from speculabel.records import Item, Vote
from speculabel.tasks import Task

#: the sample size of the first look (a learning worker needs a few dozen labels per class)
FIRST = 200
#: judge labels asked for at a time
BATCH = 64
#: a look must add at least this much certified coverage (share of items) to go on buying
MIN_GAIN = 0.02


class _Memo:
    """An in-memory vote store (the :class:`~speculabel.backends.cached.VoteCache` protocol),
    so a worker is asked about each item once however many looks see it."""

    def __init__(self) -> None:
        self.votes: dict[tuple[str, str, str], Vote] = {}

    def get_many(self, model_fp: str, task_fp: str, keys: Sequence[str]) -> dict[str, Vote]:
        return {k: self.votes[(model_fp, task_fp, k)] for k in keys
                if (model_fp, task_fp, k) in self.votes}

    def put_many(self, model_fp: str, task_fp: str, rows: Sequence[tuple[str, Vote]]) -> None:
        for k, v in rows:
            self.votes[(model_fp, task_fp, k)] = v


def look_sizes(n: int, first: int = FIRST) -> list[int]:
    """The planned sample sizes: ``first`` doubled until ``n`` (``n`` is always the last)."""
    sizes, m = [], max(1, first)
    while m < n:
        sizes.append(m)
        m *= 2
    return [*sizes, n]


def calibrate_buying(calibrate: Callable[..., Any], error: type[Exception], task: Task,
                     workers: Sequence[Backend], items: Sequence[Item], judge: Backend, *,
                     scope: str, target: float, delta: float,
                     first: int = FIRST, min_gain: float = MIN_GAIN,
                     volume: int | None = None, seed: int = 0, **kwargs: Any) -> Any:
    """See the module docstring. ``calibrate``: :func:`speculabel.certify.api.calibrate` (each
    look), ``error``: its error class; ``kwargs`` go to every look (policy, fit_fraction,
    method). Returns that function's certificate."""
    from speculabel.backends.learner.base import LearningWorker

    CalibrationError = error  # the caller's own error class
    if scope == "non-inferior":
        raise CalibrationError("buy='sequential' buys the judge's labels; non-inferior needs "
                               "gold for every item: give references= and buy='all'")
    if first < 2:
        raise CalibrationError(f"first: the first look needs at least 2 items, got {first}")
    n = len(items)
    sizes = look_sizes(n, first)
    level = delta / len(sizes)
    memo = _Memo()
    asked = [w if isinstance(unwrap(w), LearningWorker) else CachedBackend(w, memo)
             for w in workers]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    labels: list[str | None] = []
    looks: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None  # (coverage, look's sample size)
    last: Any = None

    def look(m: int) -> Any:
        return calibrate(task=task, workers=asked, items=[items[i] for i in order[:m]],
                         references=labels[:m], scope=scope, target=target, delta=level,
                         seed=seed, **kwargs)

    for j, m in enumerate(sizes):
        new = [items[i] for i in order[len(labels):m]]
        for at in range(0, len(new), BATCH):  # in batches: a progress line, a store write each
            labels += [v.label for v in judge.score(task, new[at:at + BATCH])]
        try:
            last = look(m)
        except CalibrationError as e:  # e.g. one class only in a small first sample
            looks.append({"items": m, "coverage": None, "error": str(e)})
            continue
        rate = last.judge_call_rate
        coverage = None if rate is None else 1.0 - rate
        looks.append({"items": m, "coverage": coverage, "threshold": last.threshold})
        before = best[0] if best is not None else None
        if coverage is not None and (best is None or coverage > best[0]):
            best = (coverage, m)
        if before is not None and j + 1 < len(sizes):
            gain = (coverage or 0.0) - before
            if volume is None and gain < min_gain:
                break
            if volume is not None and gain * volume < (sizes[j + 1] - m) * (coverage or 0.0):
                break
    extra = {"buy": "sequential", "labels_bought": len(labels), "items": n,
             "looks_planned": len(sizes), "level_per_look": level, "looks": looks}
    if last is None:
        raise CalibrationError(f"no look could calibrate: {looks[-1].get('error')}")
    cert = last
    if best is not None and best[1] != looks[-1]["items"]:
        # a later look refitted the learning workers in place: fit the best look's again
        # (the same sample, split and seed give the same fit) and check it is the same
        cert = look(best[1])
        want = next(lk for lk in looks if lk["items"] == best[1])
        got = 1.0 - (cert.judge_call_rate if cert.judge_call_rate is not None else 1.0)
        if cert.threshold != want["threshold"] or abs(got - want["coverage"]) > 1e-9:
            raise CalibrationError(f"refitting the look at {best[1]} items gave threshold "
                                   f"{cert.threshold} and coverage {got:.4f}, not "
                                   f"{want['threshold']} and {want['coverage']:.4f}: the fit "
                                   "is not deterministic")
    # the statement: the chosen look's, at delta overall (the union bound), not delta / K
    plan = cert.calibration.plan
    plan.result = dataclasses.replace(plan.result, delta=delta)
    final = [w if isinstance(unwrap(w), LearningWorker) else w0
             for w, w0 in zip(cert.workers, workers, strict=True)]
    return dataclasses.replace(cert, workers=final, delta=delta, extra=extra)
