"""Step 1 of a bench: ask every model about the same items and keep each vote in the vote store,
with its latency and CPU time.  Votes already stored are not asked again, so an interrupted
bench continues where it stopped and a second bench costs no model call."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.io.votes import VoteStore, item_key
from speculabel.records import Item
from speculabel.tasks import Task

Loader = Callable[[str], Backend]
Say = Callable[[str], None]


def _quiet(msg: str) -> None:
    del msg



def _load(spec: str) -> Backend:
    from speculabel.backends.registry import load_backend

    return load_backend(spec)


# ---------------------------------------------------------------- 1. running the models


@dataclass
class ModelRun:
    """What running one model over the bench items cost (cached items cost nothing)."""

    spec: str
    fingerprint: str
    items: int
    cached: int
    scored: int
    abstained: int = 0
    load_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0




def run_models(
    task: Task,
    items: Sequence[Item],
    specs: Sequence[str],
    store: VoteStore,
    *,
    batch_size: int = 8,
    backends: Mapping[str, Backend] | None = None,
    loader: Loader = _load,
    progress: bool = True,
    interleave: bool = True,
    say: Say = _quiet,
) -> list[ModelRun]:
    """Store every model's vote for every item; returns what each model cost.

    Votes are written to the store after every batch, so at most one batch is lost when the run
    is interrupted.  Each model first scores one item untimed (prompt prefix warm-up).  A
    model's latency per item is the one its backend reports (or the batch's wall time over its
    size when the backend reports none); its CPU time per item is the process-time delta of the
    batch over its size (llama.cpp's threads included).

    ``interleave`` (default) loads every model that has work and lets them take turns, one batch
    each: when other work on the machine comes and goes, every model sees the same conditions, so
    their latencies stay comparable (model after model, a busy spell can make a small worker look
    slower than the judge).  Without it, models run one after the other and only one is in memory.
    Backends given in ``backends`` are used as they are and not closed; others are loaded with
    ``loader`` and closed when their model is done.
    """
    tfp = task.fingerprint()
    keys = [item_key(task, it) for it in items]
    uniq: dict[str, Item] = {}
    for k, it in zip(keys, items, strict=True):
        uniq.setdefault(k, it)
    runs: list[ModelRun] = []
    jobs: list[_Job] = []
    owned: list[Backend] = []
    try:
        for spec in specs:
            given = backends is not None and spec in backends
            t0 = time.perf_counter()
            backend = backends[spec] if backends is not None and given else loader(spec)
            if not given:
                owned.append(backend)
            load_s = 0.0 if given else time.perf_counter() - t0
            backend.check_task(task)
            fp = backend.vote_fingerprint(task)
            have = store.get_many(fp, tfp, list(uniq))
            todo = [(k, uniq[k]) for k in uniq if k not in have]
            run = ModelRun(spec, fp, len(uniq), len(uniq) - len(todo), 0, load_s=load_s)
            runs.append(run)
            if todo:
                say(f"{spec}: {len(have)} of {len(uniq)} votes stored, scoring {len(todo)}")
                job = _Job(backend, run, todo)
                if interleave:
                    jobs.append(job)
                else:
                    _drive([job], task, store, tfp, batch_size, progress)
            else:
                say(f"{spec}: all {len(uniq)} votes stored, nothing to score")
            if not interleave and not given:
                owned.remove(backend)
                backend.close()
        if jobs:
            _drive(jobs, task, store, tfp, batch_size, progress)
    finally:
        for b in owned:
            b.close()
    return runs


@dataclass
class _Job:
    backend: Backend
    run: ModelRun
    todo: list[tuple[str, Item]]
    done: int = 0


def _drive(
    jobs: list[_Job], task: Task, store: VoteStore, tfp: str, batch_size: int, progress: bool
) -> None:
    """Score every job's items, one batch per model in turn, storing after each batch."""
    bs = max(1, batch_size)
    for job in jobs:
        # Warm-up, untimed and not stored: the first call evaluates the shared prompt prefix (a
        # few hundred tokens), a one-off cost that a long run pays once; without this, the first
        # item's latency would carry it and inflate the mean and p95 of small benches.
        job.backend.score(task, [job.todo[0][1]])
    bar = None
    tids: list[Any] = []
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("[bold]{task.description:>14s}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), transient=False, refresh_per_second=4,
        )
        bar.start()
        tids = [bar.add_task(j.run.spec, total=len(j.todo), rate="") for j in jobs]
    try:
        while any(j.done < len(j.todo) for j in jobs):
            for idx, job in enumerate(jobs):
                if job.done >= len(job.todo):
                    continue
                chunk = job.todo[job.done : job.done + bs]
                _score_batch(job, chunk, task, store, tfp)
                job.done += len(chunk)
                if bar is not None:
                    r = job.run
                    bar.update(tids[idx], advance=len(chunk),
                               rate=f"{r.scored / max(r.wall_s, 1e-9):.1f} items/s")
    finally:
        if bar is not None:
            bar.stop()


def _score_batch(
    job: _Job, chunk: list[tuple[str, Item]], task: Task, store: VoteStore, tfp: str
) -> None:
    run = job.run
    batch = [it for _, it in chunk]
    w0, c0 = time.perf_counter(), time.process_time()
    votes = job.backend.score(task, batch)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if len(votes) != len(batch):
        raise BackendError(f"{run.spec}: {len(votes)} votes for {len(batch)} items")
    per_wall, per_cpu = wall / len(batch), cpu / len(batch)
    fixed = [v if v.latency_s > 0 else replace(v, latency_s=per_wall) for v in votes]
    store.put_many(run.fingerprint, tfp, [(k, v) for (k, _), v in zip(chunk, fixed, strict=True)],
                   cpu_s=per_cpu)
    run.scored += len(batch)
    run.abstained += sum(v.label is None for v in votes)
    run.wall_s += wall
    run.cpu_s += cpu

