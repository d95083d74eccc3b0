"""How much of the calibration items to fit on, chosen by the data with the guarantee kept.

A learning worker fitted on more items is better, but leaves fewer items to certify its
threshold on; which share is best depends on the task (3 labels: a few hundred fit items
suffice; 77 intents: most of the budget).  So ``fit_fraction="auto"`` tries a few candidate
shares fixed in advance, from the task alone (:data:`CANDIDATES`; :data:`MANY_LABEL_CANDIDATES`
for a task of :data:`MANY_LABELS` labels or more), each with its own seeded random split: the worker
is fitted on that candidate's fit share and its threshold certified on the rest at level
``delta / m`` (``m`` candidates).  The one with the largest certified coverage wins, and its
worker (fitted again on the same items: fitting is deterministic) is the one that runs.

What is certified: by the union bound, with probability at least ``1 - delta`` over the draw
of the calibration items and the splits, *every* candidate's statement holds for the worker
fitted on that candidate's fit share; so the chosen one holds too, whichever is chosen, and it
is about exactly the worker that is shipped.  The price is the smaller level ``delta / m`` for
each test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from speculabel.tasks.task import MANY_LABELS

if TYPE_CHECKING:
    from speculabel.certify.outcome import Calibration

#: candidate fit shares of ``fit_fraction="auto"``, fixed before any data is seen
CANDIDATES: tuple[float, ...] = (0.3, 0.5, 0.7)
#: a task with this many labels or more: a head needs a dozen examples of each of dozens of
#: labels, so the candidates lie higher, and there are more of them (each one is another
#: random split: one certify share of several certifies more, which pays for delta / 5).
#: Measured on Banking77 only (77 intents, 1,500 labels, draws 0-4, test coverage certified
#: at targets 0.90 / 0.92 / 0.95): (0.3, 0.5, 0.7) 87.8 / 80.8 / 66.9; these 89.4 / 83.7 / 72.9.
MANY_LABEL_CANDIDATES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8)

RunFn = Callable[[list[int], list[int], float], "Calibration"]
TuneFn = Callable[[list[int]], None]


def split(n: int, fit_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Fit and certify indices: a seeded random share ``fit_fraction`` of ``range(n)``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_fit = round(fit_fraction * n)
    return sorted(order[:n_fit]), sorted(order[n_fit:])


def nested_split(n: int, core: Sequence[int], fit_fraction: float, seed: int
                 ) -> tuple[list[int], list[int]]:
    """Fit and certify indices whose fit share holds all of ``core`` and, drawn at random
    (seeded) from the other items, enough more to make up ``fit_fraction`` of ``range(n)``."""
    inside = set(core)
    rest = [i for i in range(n) if i not in inside]
    random.Random(seed).shuffle(rest)
    extra = max(0, round(fit_fraction * n) - len(inside))
    return sorted([*inside, *rest[:extra]]), sorted(rest[extra:])


def fractions_of(fit_fraction: float | str | Sequence[float] | None, default: float,
                 n_labels: int = 0) -> list[float]:
    """The candidate shares: ``"auto"`` -> :data:`CANDIDATES` (:data:`MANY_LABEL_CANDIDATES`
    when the task has ``n_labels >= MANY_LABELS``); a number -> just it; a list -> those;
    None -> ``[default]``.  ``ValueError`` for a share outside (0, 1)."""
    if fit_fraction is None:
        return [default]
    if isinstance(fit_fraction, str):
        if fit_fraction != "auto":
            raise ValueError(f"fit fraction must be a number in [0, 1) or \"auto\", got "
                             f"{fit_fraction!r}")
        return list(MANY_LABEL_CANDIDATES if n_labels >= MANY_LABELS else CANDIDATES)
    fracs = [float(fit_fraction)] if isinstance(fit_fraction, int | float) else [
        float(f) for f in fit_fraction]
    if not fracs or any(not 0.0 <= f < 1.0 for f in fracs):
        raise ValueError(f"fit fractions must be in [0, 1), got {fracs}")
    return fracs


def certify_best_split(n: int, fractions: Sequence[float], seed: int, delta: float,
                       run: RunFn, tune: TuneFn | None = None) -> Calibration:
    """Run ``run(fit_idx, cert_idx, level)`` for each candidate share at ``delta / m``; return
    the calibration with the largest certified coverage (fitted last, so its workers are the
    ones left fitted), its promise stated at the overall ``delta``.

    ``tune(core)``: called once, before any candidate, with a seeded random *core* of the
    smallest candidate share; every candidate's fit share then holds the core (and a random
    draw of the other items: :func:`nested_split`), so settings chosen on the core's labels
    (the learner's cross-validation, done once instead of once per candidate) never saw a
    certify item of any candidate."""
    m = len(fractions)
    if m == 1:
        fit_idx, cert_idx = split(n, fractions[0], seed)
        return run(fit_idx, cert_idx, delta)
    level = delta / m
    splits = [split(n, frac, seed + i) for i, frac in enumerate(fractions)]
    core: list[int] = []
    if tune is not None:
        core = split(n, min(fractions), seed)[0]
        tune(core)
        splits = [nested_split(n, core, frac, seed + 1 + i) for i, frac in enumerate(fractions)]
    tried: list[tuple[float, Calibration]] = []
    for (fit_idx, cert_idx), frac in zip(splits, fractions, strict=True):
        tried.append((frac, run(fit_idx, cert_idx, level)))

    def key(fc: tuple[float, Calibration]) -> tuple[bool, float, float]:
        r = fc[1].plan.result
        return (r.feasible, r.coverage, r.best_bound)

    best_i = max(range(m), key=lambda i: key(tried[i]))
    frac, cal = tried[best_i]
    if best_i != m - 1:  # fit the chosen candidate's workers again: they are the ones shipped
        cal = run(*splits[best_i], level)
    cal.plan.result.delta = delta  # each test ran at delta / m; together they hold at delta
    shares = ", ".join(f"{f:g}" + (" (chosen)" if j == best_i else "") + ": "
                       + (f"{100 * c.plan.result.coverage:.1f}% covered" if c.plan.result.feasible
                          else "nothing certified")
                       for j, (f, c) in enumerate(tried))
    if core:
        cal.notes.append(f"learner settings chosen by cross-validation on {len(core)} items "
                         "that every candidate fits on (no certify item seen)")
    cal.notes.append(f"fit share chosen among {m} candidates, each certified at delta/{m} = "
                     f"{level:.4g} (union bound: all hold together w.p. >= {1 - delta:g}): "
                     f"{shares}")
    cal.fit_fraction = frac
    return cal
