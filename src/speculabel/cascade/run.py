"""The cascade: workers vote, the policy decides, the judge labels what the workers cannot.

Items are processed in batches.  Each backend parallelises inside its own ``score`` call (HTTP
backends keep many requests in flight), and with ``parallel_workers`` the workers of a batch are
asked at the same time.  A record is emitted as soon as its item is decided: worker-decided items
of a batch come out before the judge is even asked about the rest.

A *retryable* judge abstention (a server that is down) leaves the item *pending*: no record is
written, so the next run of the same command picks it up again, and with a vote store the
workers' votes are not paid for twice.  Workers that learn (:class:`Learner`) are given the
judge's labels as they come.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from speculabel.backends.base import Backend, unwrap
from speculabel.backends.cached import CachedBackend, VoteCache
from speculabel.backends.calibrated import CalibratedBackend
from speculabel.backends.capabilities import Learner
from speculabel.policy import Decision, Policy
from speculabel.records import Item, Record, Vote
from speculabel.tasks import Task


@dataclass
class CascadeStats:
    items: int = 0
    by_workers: int = 0
    judge_calls: int = 0
    pending: int = 0
    errors: int = 0
    truncated: int = 0
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def judge_rate(self) -> float:
        decided = self.by_workers + self.judge_calls
        return self.judge_calls / decided if decided else 0.0

    def add(self, rec: Record) -> None:
        self.items += 1
        if rec.error:
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
        from speculabel.bench.metrics import percentile

        lat = self.latencies
        return {
            "items": self.items,
            "decided_by_workers": self.by_workers,
            "judge_calls": self.judge_calls,
            "judge_call_rate": round(self.judge_rate, 4),
            "pending": self.pending,
            "failures": self.errors,
            "truncated": self.truncated,
            "mean_latency_s": round(sum(lat) / len(lat), 4) if lat else 0.0,
            "p95_latency_s": round(percentile(lat, 95), 4) if lat else 0.0,
            "wall_s": round(self.wall_s, 3),
        }


def combine_latency(votes: Sequence[Vote], parallel: bool, early_exit: bool) -> float:
    """The workers' share of an item's latency: the sum when they are asked one after the other;
    the slowest when asked together; under early exit the first two together, then the third (as
    :func:`speculabel.bench.simulate.simulate` charges it)."""
    lats = [0.0 if v.cached else v.latency_s for v in votes]
    if not parallel:
        return sum(lats)
    if early_exit and len(lats) == 3:
        return max(lats[:2]) + lats[2]
    return max(lats, default=0.0)


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


def judge_record(item_id: str, votes: list[Vote], jv: Vote, rule: str, *, workers_latency: float,
                 truncated: bool, row: int | None = None) -> Record:
    """The record of an escalated item from the judge's vote (not a retryable abstention: that
    leaves the item pending); a judge that abstained for good gives a ``judge`` error record."""
    return Record(
        id=item_id,
        label=jv.label,
        decided_by="judge",
        votes=votes,
        judge_vote=jv,
        latency_s=workers_latency + (0.0 if jv.cached else jv.latency_s),
        rule=rule,
        truncated=truncated or jv.truncated or any(v.truncated for v in votes),
        error=None if jv.label is not None else f"judge abstained: {jv.error}",
        error_kind=None if jv.label is not None else "judge",
        row=row,
    )


class Cascade:
    """Up to three workers vote; the policy accepts or escalates to the judge.

    ``calibration`` maps a model name to ``{"offsets": {label: logprob}, "temperature": T}``,
    applied to its votes after the vote store (raw votes are stored).

    ``early_exit`` (three workers): ask the first two; ask the third only when the rule does
    not already accept their two votes (as if the third had abstained).
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
    ) -> None:
        if not workers and judge is None:
            raise ValueError("a cascade needs at least one worker, or a judge alone")
        if len(workers) > 3:
            raise ValueError(f"at most three workers, got {len(workers)}")
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"the same worker is listed twice: {names}")
        self.task = task
        self.policy = policy
        self.early_exit = early_exit and len(workers) == 3
        self.parallel_workers = parallel_workers
        self.batch_size = max(1, batch_size)
        calibration = calibration or {}

        def wrap(b: Backend) -> Backend:
            return wrap_backend(b, vote_store, calibration.get(b.spec))

        self.workers = [wrap(w) for w in workers]
        self.judge = wrap(judge) if judge is not None else None
        self.stats = CascadeStats()

    # ------------------------------------------------------------------ running
    def classify(
        self, items: Iterable[Item], on_record: Callable[[Record], None] | None = None
    ) -> list[Record]:
        out = []
        for rec in self.classify_iter(items):
            if on_record is not None:
                on_record(rec)
            out.append(rec)
        return out

    def classify_iter(self, items: Iterable[Item]) -> Iterator[Record]:
        t0 = time.perf_counter()
        batch: list[Item] = []
        try:
            for item in items:
                batch.append(item)
                if len(batch) >= self.batch_size:
                    yield from self._run_batch(batch)
                    batch = []
            if batch:
                yield from self._run_batch(batch)
        finally:
            self.stats.wall_s += time.perf_counter() - t0

    def _ask(self, workers: Sequence[Backend], items: Sequence[Item]) -> list[list[Vote]]:
        """votes[w][i]: worker w's vote on item i, workers asked concurrently if allowed."""
        if not items:
            return [[] for _ in workers]
        if self.parallel_workers and len(workers) > 1:
            with ThreadPoolExecutor(max_workers=len(workers)) as pool:
                futures = [pool.submit(w.score, self.task, items) for w in workers]
                return [f.result() for f in futures]
        return [w.score(self.task, items) for w in workers]

    def _combine(self, votes: Sequence[Vote]) -> float:
        return combine_latency(votes, self.parallel_workers, self.early_exit)

    def _run_batch(self, batch: list[Item]) -> Iterator[Record]:
        n_workers = len(self.workers)
        item_votes: list[list[Vote]] = [[] for _ in batch]
        if not self.workers:  # the judge alone: the baseline, in the same records
            yield from self._judge(batch, list(range(len(batch))), item_votes,
                                   [Decision(False, None, 0.0, "judge only")] * len(batch))
            return
        first = self.workers[:2] if self.early_exit else self.workers
        for w_votes in self._ask(first, batch):
            for i, v in enumerate(w_votes):
                item_votes[i].append(v)
        decisions: list[Decision] = [self.policy.decide(v, n_workers) for v in item_votes]
        if self.early_exit:
            again = [i for i, d in enumerate(decisions) if not d.accepted]
            third = self._ask(self.workers[2:], [batch[i] for i in again])[0]
            for i, v in zip(again, third, strict=True):
                item_votes[i].append(v)
                decisions[i] = self.policy.decide(item_votes[i], n_workers)

        escalate: list[int] = []
        for i, (item, votes, d) in enumerate(zip(batch, item_votes, decisions, strict=True)):
            if d.accepted:
                rec = Record(
                    id=item.id,
                    label=d.label,
                    decided_by="workers",
                    votes=votes,
                    latency_s=self._combine(votes),
                    rule=f"{self.policy.describe()}: {d.reason}",
                    truncated=item.truncated or any(v.truncated for v in votes),
                    row=item.row,
                )
                self.stats.add(rec)
                yield rec
            else:
                escalate.append(i)
        if escalate:
            yield from self._judge(batch, escalate, item_votes, decisions)

    def _judge(self, batch: list[Item], escalate: list[int], item_votes: list[list[Vote]],
               decisions: Sequence[Decision]) -> Iterator[Record]:
        """The judge labels the escalated items; learning workers are given its labels."""
        esc_items = [batch[i] for i in escalate]
        if self.judge is None:
            for i in escalate:
                rec = Record(
                    id=batch[i].id, label=None, decided_by=None, votes=item_votes[i],
                    latency_s=self._combine(item_votes[i]),
                    rule=self._rule(decisions[i]),
                    error="escalated, but the cascade has no judge",
                    error_kind="no_judge", row=batch[i].row,
                )
                self.stats.add(rec)
                yield rec
            return
        judge_votes = self.judge.score(self.task, esc_items)
        learned_items: list[Item] = []
        learned_labels: list[str] = []
        for i, jv in zip(escalate, judge_votes, strict=True):
            item, votes = batch[i], item_votes[i]
            if jv.label is None and jv.retryable:
                self.stats.pending += 1  # left for the next run; nothing written
                continue
            rec = judge_record(item.id, votes, jv, self._rule(decisions[i]),
                               workers_latency=self._combine(votes), truncated=item.truncated,
                               row=item.row)
            if jv.label is not None:
                learned_items.append(item)
                learned_labels.append(jv.label)
            self.stats.add(rec)
            yield rec
        if learned_items:
            for w in self.workers:
                inner = unwrap(w)
                if isinstance(inner, Learner):
                    inner.observe(learned_items, learned_labels)

    def _rule(self, d: Decision) -> str:
        return "judge only" if not self.workers else f"{self.policy.describe()}: {d.reason}"

    def close(self) -> None:
        for b in [*self.workers, *([self.judge] if self.judge else [])]:
            b.close()
