"""Adaptive runs in the bench: the judge-call rate per window and whether the guarantee held.

The stream is a data set read in a random order (as ``classify --adaptive`` reads a file): the
same :class:`~speculabel.adaptive.run.AdaptiveCascade` runs over it, with every judge vote
taken from the vote store (computed once by ``classify --judge-only``; a replay that would need
a new judge call stops with the reason), so 20 reshuffled streams cost no model call.  Each run
reports its judge calls (warm-up, audit, escalations), its certified statement, and its
*realised* whole-data-set agreement with the judge, measured against the judge's stored label of
every item; the share of streams whose realised agreement misses the target must not exceed
delta.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from speculabel.adaptive.plan import AdaptiveSettings, order
from speculabel.adaptive.report import report, statement
from speculabel.adaptive.run import AdaptiveCascade
from speculabel.adaptive.state import AdaptiveState
from speculabel.backends.base import Backend, BackendError
from speculabel.backends.cached import CachedBackend
from speculabel.io.results import ResultsFile
from speculabel.io.votes import VoteStore, item_key
from speculabel.records import Item, Vote
from speculabel.tasks import Task


class StoredOnly(Backend):
    """A judge that answers from the vote store only: a replay never calls the model."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.spec = inner.spec

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def vote_fingerprint(self, task: Task) -> str:
        return self.inner.vote_fingerprint(task)

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        raise BackendError(f"{self.spec}: {len(items)} judge votes are not in the vote store; "
                           "run classify --judge-only on the stream first")


def fill_judge_votes(task: Task, items: Sequence[Item], judge: str, store: VoteStore,
                     say: Callable[[str], None] = lambda m: None) -> None:
    """Ask the judge once for every item the store has no vote of (the stream's reference)."""
    from speculabel.certify.votes import collect_votes

    def progress(spec: str, done: int, total: int) -> None:
        if done == total or done % 500 < 16:
            say(f"  {spec}: {done}/{total}")

    collect_votes(task, items, [judge], store, progress=progress)


def stored_labels(task: Task, items: Sequence[Item], judge: Backend, store: VoteStore
                  ) -> list[str | None]:
    hits = store.get_many(judge.vote_fingerprint(task), task.fingerprint(),
                          [item_key(task, it) for it in items])
    return [hits[item_key(task, it)].label if item_key(task, it) in hits else None
            for it in items]


def replay(
    task: Task,
    items: Sequence[Item],
    gold: Sequence[str | None] | None,
    judge: Backend,
    make_workers: Callable[[Path], list[Backend]],
    settings: AdaptiveSettings,
    store: VoteStore,
    *,
    seeds: Sequence[int] = tuple(range(20)),
    window: int = 250,
    say: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """One adaptive run per seed over ``items``; the curves of the first, the spread of all.

    ``make_workers(folder)`` builds fresh workers for one run (learning workers keep their state
    in ``folder``).
    """
    reference = stored_labels(task, items, judge, store)
    missing = sum(r is None for r in reference)
    if missing:
        raise BackendError(f"{missing} of {len(items)} judge votes are not in the vote store; "
                           "run classify --judge-only on the stream first")
    ref = {it.id: r for it, r in zip(items, reference, strict=True)}
    truth = {it.id: g for it, g in zip(items, gold, strict=True)} if gold else {}
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        s = AdaptiveSettings(**{**settings.to_json(), "seed": seed})
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="speculabel-stream-") as tmp:
            out = Path(tmp) / "out.jsonl"
            state = AdaptiveState.open(Path(tmp) / "out.jsonl.adaptive", s, len(items))
            cascade = AdaptiveCascade(task, make_workers(state.directory),
                                      CachedBackend(StoredOnly(judge), store), state,
                                      batch_size=32)
            perm = order([item_key(task, it) for it in items], seed)
            with ResultsFile(out, fsync=False) as results:
                for rec in cascade.run([(p, items[j]) for p, j in enumerate(perm)], 0):
                    results.write(rec)
                recs = list(results.done.values())
            cascade.close()
            positions = {items[j].id: p for p, j in enumerate(perm)}
            data = report(state, recs, positions, window)
        agree = sum(r.label == ref[r.id] for r in recs if r.id) / len(recs)
        acc = (sum(r.label == truth[r.id] for r in recs if r.id) / len(recs)) if truth else None
        run = {"seed": seed, **{k: data[k] for k in ("statement", "judge_call_rate",
                                                     "threshold", "audit", "looks", "windows")},
               "realised_agreement": agree, "accuracy": acc,
               "certified": bool(state.certified_looks), "seconds": time.perf_counter() - t0}
        runs.append(run)
        say(f"stream seed {seed}: judge calls {data['judge_call_rate']:.1%}, realised agreement "
            f"{agree:.3f}; {statement(state)}")
    judge_acc = (sum(ref[i] == truth[i] for i in ref) / len(ref)) if truth else None
    missed = [r for r in runs if r["certified"] and r["realised_agreement"] < settings.target]
    return {
        "task": task.name, "items": len(items), "settings": settings.to_json(),
        "judge_accuracy": judge_acc, "runs": runs,
        "judge_call_rate": {"first": runs[0]["judge_call_rate"],
                            "mean": sum(r["judge_call_rate"] for r in runs) / len(runs),
                            "max": max(r["judge_call_rate"] for r in runs)},
        "realised_agreement": {"mean": sum(r["realised_agreement"] for r in runs) / len(runs),
                               "min": min(r["realised_agreement"] for r in runs)},
        "violation_share": len(missed) / len(runs),
        "guarantee_held": len(missed) / len(runs) <= settings.delta,
    }


def workers_factory(task: Task, specs: Sequence[str], store: VoteStore, items: Sequence[Item],
                    cache: Path) -> Callable[[Path], list[Backend]]:
    """Fresh workers for each replayed run: stored-vote workers through the vote store, learning
    workers in the run's folder with every item's embedding preloaded from ``cache`` (computed
    once here, so twenty runs embed each text once)."""
    from speculabel.backends.learner.base import LearningWorker
    from speculabel.backends.registry import load_backend
    from speculabel.certify.workflow import learning

    fixed = {s: load_backend(s) for s in specs if not learning(s)}
    learners = [s for s in specs if learning(s)]
    if learners and not cache.exists():
        # a private folder: a shared one would hold the previous stream's worker of another kind
        with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
            warm = load_backend(learners[0], directory=tmp)
            assert isinstance(warm, LearningWorker)
            warm.check_task(task)
            warm.features([warm.row_of(it) for it in items])
            warm.save_to(Path(tmp))
            (Path(tmp) / "embeddings.npz").replace(cache)

    def make(folder: Path) -> list[Backend]:
        out: list[Backend] = []
        for spec in specs:
            if spec in fixed:
                out.append(CachedBackend(fixed[spec], store) if fixed[spec].cacheable
                           else fixed[spec])
                continue
            worker = load_backend(spec, directory=str(folder / spec.replace(":", "-")))
            assert isinstance(worker, LearningWorker)
            worker.preload_embeddings(cache)
            out.append(worker)
        return out

    return make
