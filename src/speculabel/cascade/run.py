"""The cascade: workers vote, the policy decides, the judge labels what the workers cannot.

Items are processed in batches.  Each backend parallelises inside its own ``score`` call (HTTP
backends keep many requests in flight), and with ``parallel_workers`` the workers of a batch are
asked at the same time.  The votes of a batch go through the one decide core
(:mod:`speculabel.cascade.decide`), and the batch's records come out **in input order**: the
judge is asked about the escalated items of a batch before any record of it is yielded, so the
batch is the (bounded) reorder buffer.  ``classify_iter(items, ordered=False)`` yields the
workers' records of a batch before the judge is asked, each carrying its input ``position``.

**Every item gets a record.**  An item that cannot be classified (a missing, empty or non-text
field) gets an ``input`` error record; a vote with NaN, negative or non-numeric probabilities is
an abstention.  A *retryable* judge abstention (a server that is down) is asked again
``judge_retries`` times with capped exponential waits; an item still unanswered gets a
``no_judge`` record (``decided_by`` null, retryable: the CLI's rerun decides it again, and with a
vote store the workers' votes are not paid for twice), or, with ``on_pending="raise"``,
:meth:`Cascade.classify` raises :class:`speculabel.errors.PendingError` naming the ids.  Workers
that learn (:class:`Learner`) are given the judge's labels as they come.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from speculabel.backends.base import Backend, unwrap
from speculabel.backends.cached import CachedBackend, VoteCache
from speculabel.backends.calibrated import CalibratedBackend
from speculabel.backends.capabilities import Learner
from speculabel.cascade.decide import (
    Escalation,
    Rules,
    decide_batch,
    input_record,
    item_problem,
    settle,
    unjudged,
)
from speculabel.cascade.latency import Latencies
from speculabel.cascade.surface import Surface
from speculabel.errors import PendingError
from speculabel.interrupt import check
from speculabel.policy import Policy
from speculabel.records import Item, Record, Vote
from speculabel.tasks import Task

#: the longest wait between two tries of an unavailable judge
MAX_RETRY_WAIT_S = 30.0


@dataclass
class CascadeStats:
    items: int = 0
    by_workers: int = 0
    judge_calls: int = 0
    pending: int = 0
    errors: int = 0
    truncated: int = 0
    #: mean and p95 in bounded memory (a long run keeps no number per record)
    latencies: Latencies = field(default_factory=Latencies)
    wall_s: float = 0.0
    pending_ids: list[str] = field(default_factory=list)

    @property
    def judge_rate(self) -> float:
        decided = self.by_workers + self.judge_calls
        return self.judge_calls / decided if decided else 0.0

    def add(self, rec: Record) -> None:
        self.items += 1
        if rec.error_kind == "no_judge" and rec.judge_vote is not None:
            self.pending += 1  # the judge was unavailable: a rerun decides it
            if rec.id is not None:
                self.pending_ids.append(rec.id)
        elif rec.error:
            self.errors += 1
        elif rec.decided_by == "workers":
            self.by_workers += 1
        elif rec.decided_by == "judge":
            self.judge_calls += 1
        if rec.truncated:
            self.truncated += 1
        if not rec.error:
            self.latencies.append(rec.latency_s)

    def summary(self) -> dict[str, float | int]:
        lat = self.latencies
        return {
            "items": self.items,
            "decided_by_workers": self.by_workers,
            "judge_calls": self.judge_calls,
            "judge_call_rate": round(self.judge_rate, 4),
            "pending": self.pending,
            "failures": self.errors,
            "truncated": self.truncated,
            "mean_latency_s": round(lat.mean(), 4),
            "p95_latency_s": round(lat.percentile(95), 4),
            "wall_s": round(self.wall_s, 3),
        }


def wrap_backend(backend: Backend, store: VoteCache | None,
                 calibration: Mapping[str, Any] | None) -> Backend:
    """The vote store, then the calibration, around a model (raw votes are stored).  A learning
    worker changes with every retrain: it is not cacheable, so its votes are never stored."""
    if store is not None and backend.cacheable:
        backend = CachedBackend(backend, store)
    if calibration:
        backend = CalibratedBackend(backend, calibration.get("offsets"),
                                    float(calibration.get("temperature", 1.0)))
    return backend


def ask(task: Task, backends: Sequence[Backend], items: Sequence[Item],
        parallel: bool) -> list[list[Vote]]:
    """votes[w][i]: backend w's vote on item i, the backends asked concurrently if
    ``parallel`` (the decide core checks every vote: :func:`~speculabel.cascade.decide.sane`)."""
    if not items:
        return [[] for _ in backends]
    if parallel and len(backends) > 1:
        with ThreadPoolExecutor(max_workers=len(backends)) as pool:
            futures = [pool.submit(b.score, task, items) for b in backends]
            return [f.result() for f in futures]
    return [b.score(task, items) for b in backends]


class Cascade(Surface):
    """Up to three workers vote; the policy accepts or escalates to the judge.

    ``calibration`` maps a model name to ``{"offsets": {label: logprob}, "temperature": T}``,
    applied to its votes after the vote store (raw votes are stored).

    ``early_exit`` (three workers): ask the first two; ask the third only when the rule does
    not already accept their two votes (as if the third had abstained).

    ``judge_retries`` / ``retry_wait_s``: how often, and after how long a first wait (doubled
    each time, at most 30 s), an unavailable judge is asked again before an item gets its
    ``no_judge`` record.
    """

    def __init__(
        self,
        task: Task,
        workers: Sequence[Backend],
        judge: Backend | None,
        policy: Policy,
        *,
        early_exit: bool = False,
        parallel_workers: bool = False,
        vote_store: VoteCache | None = None,
        batch_size: int = 8,
        calibration: Mapping[str, Mapping[str, Any]] | None = None,
        judge_retries: int = 2,
        retry_wait_s: float = 0.5,
    ) -> None:
        if not workers and judge is None:
            raise ValueError("a cascade needs at least one worker, or a judge alone")
        if len(workers) > 3:
            raise ValueError(f"at most three workers, got {len(workers)}")
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"the same worker is listed twice: {names}")
        if judge_retries < 0 or retry_wait_s < 0:
            raise ValueError("judge_retries and retry_wait_s must not be negative")
        self.task = task
        self.policy = policy
        self.early_exit = early_exit and len(workers) == 3
        self.parallel_workers = parallel_workers
        self.batch_size = max(1, batch_size)
        self.judge_retries = judge_retries
        self.retry_wait_s = retry_wait_s
        calibration = calibration or {}

        def wrap(b: Backend) -> Backend:
            return wrap_backend(b, vote_store, calibration.get(b.spec))

        self.workers = [wrap(w) for w in workers]
        self.judge = wrap(judge) if judge is not None else None
        hints = [unwrap(w).batch_hint for w in self.workers]
        #: items the workers see at once: hundreds when every worker is cheap (embeddings,
        #: lexicons), else ``batch_size``; the judge is always asked ``batch_size`` at a time
        self.worker_batch = (max(self.batch_size, min(h for h in hints if h is not None))
                             if hints and None not in hints else self.batch_size)
        self.rules = Rules(policy, len(self.workers), parallel_workers, self.early_exit)
        self.stats = CascadeStats()
        #: polled between model calls; when it returns True the run stops (KeyboardInterrupt)
        self.should_stop: Callable[[], bool] | None = None

    # ------------------------------------------------------------------ running
    def classify(
        self,
        items: Iterable[Item],
        on_record: Callable[[Record], None] | None = None,
        *,
        on_pending: Literal["record", "raise"] = "record",
    ) -> list[Record]:
        """One record per item, in input order.  ``on_pending="raise"``: raise
        :class:`PendingError` (naming the ids; ``.records`` holds every record) when the judge
        stayed unavailable for some items, instead of returning their ``no_judge`` records."""
        if on_pending not in ("record", "raise"):
            raise ValueError(f"on_pending must be 'record' or 'raise', got {on_pending!r}")
        out = []
        for rec in self.classify_iter(items):
            if on_record is not None:
                on_record(rec)
            out.append(rec)
        pending = [r.id or "" for r in out if r.error_kind == "no_judge" and r.judge_vote]
        if pending and on_pending == "raise":
            raise PendingError(pending, records=out)
        return out

    def classify_iter(self, items: Iterable[Item], *, ordered: bool = True) -> Iterator[Record]:
        """Records as batches are decided, in input order (``ordered=False``: a batch's
        worker-decided records before its judge's; ``record.position`` says where each item
        stood in the input)."""
        t0 = time.perf_counter()
        batch: list[tuple[int, Item]] = []
        size = self.batch_size  # doubles up to worker_batch: learners get labels early
        try:
            for pos, item in enumerate(items):
                batch.append((pos, item))
                if len(batch) >= size:
                    yield from self._run_batch(batch, ordered)
                    batch = []
                    size = min(2 * size, self.worker_batch)
            if batch:
                yield from self._run_batch(batch, ordered)
        finally:
            self.stats.wall_s += time.perf_counter() - t0

    def _check_stop(self) -> None:
        """Between model calls: a Ctrl-C or SIGTERM seen by :mod:`speculabel.interrupt` (or
        ``should_stop``) stops the run here, with every record so far whole."""
        check()
        if self.should_stop is not None and self.should_stop():
            raise KeyboardInterrupt

    def _ask(self, workers: Sequence[Backend], items: Sequence[Item]) -> list[list[Vote]]:
        self._check_stop()
        if not self.parallel_workers:  # one model at a time: a stop is seen between calls
            cols = []
            for w in workers:
                cols.extend(ask(self.task, [w], items, False))
                self._check_stop()
            return cols
        return ask(self.task, workers, items, True)

    def _run_batch(self, batch: list[tuple[int, Item]], ordered: bool) -> Iterator[Record]:
        slots: list[Record | None] = [None] * len(batch)
        live: list[int] = []  # batch places of the items the models see
        for k, (_, item) in enumerate(batch):
            problem = item_problem(self.task, item)
            if problem is None:
                live.append(k)
            else:
                slots[k] = input_record(item, problem)
        items = [batch[k][1] for k in live]
        votes: list[list[Vote]] = [[] for _ in items]
        first = self.workers[:2] if self.early_exit else self.workers
        for col in self._ask(first, items):
            for i, v in enumerate(col):
                votes[i].append(v)

        def third(idx: list[int]) -> Sequence[Vote]:
            return self._ask(self.workers[2:], [items[i] for i in idx])[0]

        decided, escalations = decide_batch(items, votes, self.rules, third)
        for i, rec in enumerate(decided):
            if rec is not None:
                slots[live[i]] = rec
        if not ordered:
            for k, rec in enumerate(slots):
                if rec is not None:
                    yield self._emit(rec, batch[k][0])
            for esc, rec in zip(escalations, self._judge(escalations), strict=True):
                yield self._emit(rec, batch[live[esc.index]][0])
            return
        for esc, rec in zip(escalations, self._judge(escalations), strict=True):
            slots[live[esc.index]] = rec
        for k, rec in enumerate(slots):
            assert rec is not None
            yield self._emit(rec, batch[k][0])

    def _emit(self, rec: Record, position: int) -> Record:
        rec.position = position
        self.stats.add(rec)
        return rec

    def _judge(self, escalations: list[Escalation]) -> list[Record]:
        """The judge labels the escalated items (an unavailable judge is asked again, within
        the retry budget); learning workers are given its labels."""
        if not escalations:
            return []
        if self.judge is None:
            return [unjudged(e, self.rules) for e in escalations]
        records: list[Record] = []
        for start in range(0, len(escalations), self.batch_size):  # the judge's own batch
            part = escalations[start:start + self.batch_size]
            jvs = self._judge_votes([e.item for e in part])
            settled = [settle(e, jv, self.rules) for e, jv in zip(part, jvs, strict=True)]
            records.extend(settled)
            learned = [(e.item, rec.label) for e, rec in zip(part, settled, strict=True)
                       if rec.label is not None]
            if learned:
                for w in self.workers:
                    inner = unwrap(w)
                    if isinstance(inner, Learner):
                        inner.observe([it for it, _ in learned], [lab for _, lab in learned])
                self._check_stop()
        return records

    def _judge_votes(self, items: list[Item]) -> list[Vote]:
        assert self.judge is not None
        self._check_stop()
        jvs = ask(self.task, [self.judge], items, False)[0]
        self._check_stop()
        for attempt in range(self.judge_retries):
            again = [i for i, v in enumerate(jvs) if v.label is None and v.retryable]
            if not again:
                break
            time.sleep(min(self.retry_wait_s * 2**attempt, MAX_RETRY_WAIT_S))
            self._check_stop()
            for i, v in zip(again, ask(self.task, [self.judge], [items[i] for i in again],
                                       False)[0], strict=True):
                jvs[i] = v
        return jvs

    def close(self) -> None:
        for b in [*self.workers, *([self.judge] if self.judge else [])]:
            b.close()
