"""Workers that learn, in the bench: fitted on the fit share, frozen, scored on every item.

Each learning worker is fitted twice when gold labels exist: on the judge's labels (for the
judge-referenced targets) and on gold (for non-inferiority; alias ``SPEC+gold``).  The fitted
state goes to ``OUT/fitted-judge/`` and ``OUT/fitted-gold/`` with the embeddings of every bench
item, so a report redone from the store scores them again without embedding anything.

Their votes are never kept in the vote store (they depend on the fit), so their cost per item
is measured here: embedding every item's texts once, cold, plus the head's prediction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from speculabel.backends.learner.base import LearningWorker
from speculabel.records import Item, Vote
from speculabel.tasks import Task

GOLD = "+gold"


def alias(spec: str, reference: str) -> str:
    return spec if reference == "judge" else spec + GOLD


def folder(out_dir: Path, spec: str, reference: str) -> Path:
    return out_dir / f"fitted-{reference}" / spec.partition("@")[0].replace(":", "-")


def load_fitted(out_dir: Path, name: str) -> LearningWorker:
    """The frozen worker behind an alias (``learner:minilm`` or ``learner:minilm+gold``)."""
    from speculabel.backends.registry import load_backend

    spec, ref = (name[: -len(GOLD)], "gold") if name.endswith(GOLD) else (name, "judge")
    worker = load_backend(spec, directory=str(folder(out_dir, spec, ref)), frozen=True)
    assert isinstance(worker, LearningWorker)
    worker.spec = name  # two fitted variants of one worker are two workers of a cascade
    return worker


def cold_cost(spec: str, task: Task, items: Sequence[Item]) -> float:
    """Seconds per item to embed an item's texts with nothing cached (a fresh worker)."""
    from speculabel.backends.registry import load_backend

    worker = load_backend(spec.partition("@")[0])
    assert isinstance(worker, LearningWorker)
    worker.check_task(task)
    rows = [worker.row_of(it) for it in items]
    worker.features(rows[:2])  # the embedder loads: a one-off, not a per-item cost
    t0 = time.perf_counter()
    worker.features(rows[2:])
    return (time.perf_counter() - t0) / max(1, len(rows) - 2)


def fit_and_score(
    task: Task,
    items: Sequence[Item],
    fit_items: Sequence[Item],
    references: Mapping[str, Sequence[str | None]],
    specs: Sequence[str],
    out_dir: Path,
    *,
    fit: Sequence[int] = (),
    say: Callable[[str], None] = lambda m: None,
) -> tuple[dict[str, dict[str, list[Vote]]], dict[str, float]]:
    """Fit on ``fit_items`` (their labels per reference in ``references``), then vote on every
    bench item; the bench items in ``fit`` (when the fit share is taken from them) abstain: they
    are used for nothing else.  Returns the votes per reference and alias, and each alias's
    measured cost per item."""
    from speculabel.certify.workflow import fit_learner

    votes: dict[str, dict[str, list[Vote]]] = {ref: {} for ref in references}
    costs: dict[str, float] = {}
    fit_set = set(fit)
    for spec in specs:
        embed = cold_cost(spec, task, items)
        say(f"{spec}: {1000 * embed:.1f} ms per item to embed, cold")
        for ref, labels in references.items():
            where = folder(out_dir, spec, ref)
            worker = fit_learner(spec, task, fit_items, labels, where)
            t0 = time.perf_counter()
            got = worker.score(task, list(items))
            per_item = embed + (time.perf_counter() - t0) / max(1, len(items))
            costs[alias(spec, ref)] = per_item
            worker.save_to(where)  # with every item's embedding: a redone report embeds nothing
            votes[ref][alias(spec, ref)] = [
                Vote.abstain(spec, "in the fit share") if i in fit_set
                else replace(v, latency_s=per_item) for i, v in enumerate(got)
            ]
            say(f"{alias(spec, ref)}: fitted on {len(fit_items)} {ref} labels")
    return votes, costs


def rescore(task: Task, items: Sequence[Item], fit: Sequence[int], names: Sequence[str],
            costs: Mapping[str, float], out_dir: Path) -> dict[str, list[Vote]]:
    """The votes of fitted workers saved by :func:`fit_and_score` (for a redone report)."""
    fit_set = set(fit)
    out: dict[str, list[Vote]] = {}
    for name in names:
        worker = load_fitted(out_dir, name)
        got = worker.score(task, list(items))
        cost = float(costs.get(name, 0.0))
        out[name] = [Vote.abstain(name, "in the fit share") if i in fit_set
                     else replace(v, latency_s=cost) for i, v in enumerate(got)]
    return out


def loader_for(out_dir: Path, base: Callable[[str], Any]) -> Callable[[str], Any]:
    """A loader for measured runs: fitted workers by alias, everything else as usual."""
    from speculabel.certify.workflow import learning

    def load(spec: str) -> Any:
        if learning(spec[: -len(GOLD)] if spec.endswith(GOLD) else spec):
            return load_fitted(out_dir, spec)
        return base(spec)

    return load
