"""Micro-batching: concurrent requests become the cascade's batches, in one model thread.

Models are not thread-safe, and a batch of 8 items costs a model far less than 8 calls of
one, so every request's items join one pending line and one thread runs the cascade on it
(continuous batching): it classifies whole cascade batches (``batch_size`` items, from one
request or several) as soon as they are there, and a partial batch only once its oldest item
has waited ``max_wait_s`` (10 ms by default); at most ``max_items`` items per
``Cascade.classify`` call.  A request is answered, its records in request order, once its last
item is decided and its records are in the log, fsynced (:mod:`speculabel.serve.log`): a second
thread writes and fsyncs each micro-batch's finished requests and then answers them, while the
model thread goes on with the next micro-batch.  So the models never wait for a client's round
trip while whole batches are pending.

The audit (:mod:`speculabel.serve.audit`) runs in the same thread but off the request path: a
drawn item waits in a queue and the judge labels it only while no request is waiting, a few
items at a time.  On close the thread finishes every queued request, then stops; audits still
queued are dropped (the queue holds items in arrival order, so what is dropped does not depend
on any outcome) and the log says how many.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from speculabel.errors import SpeculabelError
from speculabel.records import Item, Record
from speculabel.serve.audit import Audit
from speculabel.serve.log import ServeLog
from speculabel.serve.metrics import Metrics


class Closed(SpeculabelError, RuntimeError):
    """The service is stopping and takes no new request."""


@dataclass(eq=False)
class Job:
    """One request: its items, their records as they are decided, and its answer."""

    request: str
    items: list[Item]
    future: Future[list[Record]] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    records: list[Record | None] = field(init=False)
    left: int = field(init=False)

    def __post_init__(self) -> None:
        self.records = [None] * len(self.items)
        self.left = len(self.items)


@dataclass
class Write:
    jobs: list[Job]
    parts: list[tuple[str, list[Record]]]
    events: list[dict[str, Any]]


class Batcher:
    """Owns the cascade (loaded in its thread), the log's writes and the audit."""

    def __init__(self, load: Callable[[], Any], log: ServeLog, metrics: Metrics,
                 audit: Audit | None = None, *, max_wait_s: float = 0.01, max_items: int = 256,
                 audit_chunk: int = 4, on_failure: Callable[[str], None] | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self._load = load
        self.log = log
        self.metrics = metrics
        self.audit = audit
        self.max_wait_s = max_wait_s
        self.max_items = max(1, max_items)
        self.audit_chunk = max(1, audit_chunk)
        self.on_failure = on_failure
        self.on_ready = on_ready
        self.cascade: Any = None
        self.ready = threading.Event()
        self.failed: str | None = None
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._audits: collections.deque[tuple[Item, Record]] = collections.deque()
        self._closed = False
        self._stopping = False
        #: items of queued requests not yet classified, in arrival order
        self._pending: collections.deque[tuple[Job, int]] = collections.deque()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="speculabel-models", daemon=True)
        #: (jobs, their records, events) waiting for the writer; None: no more
        self._writes: queue.Queue[Write | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="speculabel-log", daemon=True)
        if audit is not None:
            metrics.audit = audit.snapshot()

    # ------------------------------------------------------------------ the caller's side
    def start(self) -> None:
        self._thread.start()
        self._writer.start()

    def submit(self, request: str, items: list[Item]) -> Future[list[Record]]:
        """Queue one request's items (at least one); the future gets their records, in order."""
        if not items:
            raise ValueError("a request with no items needs no model")
        job = Job(request, items)
        with self._lock:
            if self._closed:
                raise Closed("the service is stopping")
            self._q.put(job)
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Take no new request, finish the queued ones, stop the thread (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._q.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ the model thread
    def _main(self) -> None:
        try:
            self.cascade = self._load()
            if self.audit is not None:  # scipy's first import takes seconds: not mid-audit
                from speculabel.serve.audit import step_bounds

                step_bounds(1, 1, self.audit.settings.alpha)
        except BaseException as e:  # a model that does not load: say why and stop serving
            from speculabel.redact import redact

            self.failed = redact(f"{type(e).__name__}: {e}")
            self.log.append_events([{"event": "failed", "time": time.time(), "error": self.failed}])
            self._fail_queued(RuntimeError(self.failed))
            self._writes.put(None)
            if self.on_failure:
                self.on_failure(self.failed)
            return
        self.metrics.ready.set(1)
        self.ready.set()
        if self.on_ready:
            self.on_ready()
        try:
            self._loop()
        finally:
            self._writes.put(None)
            self._writer.join()
            for job, _ in self._pending:
                if not job.future.done():
                    job.future.set_exception(Closed("the service stopped"))
            self._fail_queued(Closed("the service stopped"))
            dropped = len(self._audits)
            self._audits.clear()
            self.log.append_events([{"event": "stop", "time": time.time(),
                                     "audits_dropped": dropped,
                                     **(self.audit.snapshot() if self.audit else {})}])
            for b in [*self.cascade.workers, *([self.cascade.judge] if self.cascade.judge else [])]:
                b.close()

    def _fail_queued(self, error: BaseException) -> None:
        while True:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                return
            if job is not None and not job.future.done():
                job.future.set_exception(error)

    def _pull(self, wait: float) -> None:
        """Move the queued requests' items to the pending line, waiting up to ``wait`` seconds
        for the first one (none: do not wait)."""
        try:
            job = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
        except queue.Empty:
            return
        while True:
            if job is None:
                self._stopping = True
            else:
                self._pending.extend((job, i) for i in range(len(job.items)))
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                return

    def _loop(self) -> None:
        full = max(1, int(getattr(self.cascade, "batch_size", 1)))
        while True:
            self._pull(0.0)
            if not self._pending:
                if self._stopping:
                    return
                if self._audits:
                    self._audit_some()
                else:
                    self._pull(0.5)
                continue
            # a whole cascade batch, or whatever is pending once its oldest item has waited
            # max_wait_s: a partial batch costs a model call as much as a full one
            while len(self._pending) < full and not self._stopping:
                left = self._pending[0][0].arrived + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._pull(left)
            take = min(len(self._pending), self.max_items)
            if take >= full:
                take -= take % full
            self._run([self._pending.popleft() for _ in range(take)])

    def _run(self, chunk: list[tuple[Job, int]]) -> None:
        """Classify one micro-batch; the requests it completes go to the writer."""
        items = [job.items[i] for job, i in chunk]
        self.metrics.batch_items.observe(len(items))
        events: list[dict[str, Any]] = []
        try:
            records = self.cascade.classify(items)
            if self.audit is not None and self.audit.force_judge:
                records = self._judge_all(items, records, events)
        except BaseException as e:
            failed = {id(job): job for job, _ in chunk}
            for job in failed.values():
                if not job.future.done():
                    job.future.set_exception(e)
            self._pending = collections.deque(x for x in self._pending if id(x[0]) not in failed)
            if not isinstance(e, Exception):
                raise
            return
        done: dict[int, Job] = {}
        for (job, i), rec in zip(chunk, records, strict=True):
            job.records[i] = rec
            job.left -= 1
            if job.left == 0:
                done[id(job)] = job
        jobs = list(done.values())
        parts = [(j.request, [r for r in j.records if r is not None]) for j in jobs]
        self._writes.put(Write(jobs, parts, events))  # answered once fsynced, by the writer
        self._count(records)
        if self.audit is not None and not self.audit.force_judge:
            for i in self.audit.draw(records, len(self._audits)):
                self._audits.append((items[i], records[i]))
            self.metrics.audit_queue = len(self._audits)

    def _write_loop(self) -> None:
        """The log's one writer: each micro-batch's records (and events) are written and fsynced,
        then its requests are answered; meanwhile the model thread runs the next micro-batch,
        so the fsync costs no model time."""
        while True:
            w = self._writes.get()
            if w is None:
                return
            try:
                self.log.append_batch(w.parts, w.events)
            except BaseException as e:  # not on disk: not answered
                for j in w.jobs:
                    j.future.set_exception(e)
                continue
            for j, (_, recs) in zip(w.jobs, w.parts, strict=True):
                j.future.set_result(recs)

    def _count(self, records: list[Record]) -> None:
        m = self.metrics
        m.items.inc(len(records))
        for r in records:
            if r.error_kind:
                m.item_errors.labels(kind=r.error_kind).inc()
            elif r.decided_by == "workers":
                m.by_workers.inc()
            elif r.decided_by == "judge":
                m.judge_calls.inc()

    # ------------------------------------------------------------------ the audit
    def _judge(self, items: list[Item]) -> list[Any]:
        from speculabel.cascade.decide import sane

        if not items:
            return []
        return [sane(v) for v in self.cascade.judge.score(self.cascade.task, items)]

    def _audit_some(self) -> None:
        """Judge up to ``audit_chunk`` queued audit items; log the outcome and any change."""
        assert self.audit is not None
        chunk = [self._audits.popleft() for _ in range(min(self.audit_chunk, len(self._audits)))]
        asked = [(it, rec) for it, rec in chunk if rec.decided_by == "workers"]
        votes = self._judge([it for it, _ in asked])
        self.metrics.audit_judge_calls.inc(len(asked))
        outcomes = [True for _, rec in chunk if rec.decided_by == "judge"]  # judge-decided agree
        outcomes += [jv.label == rec.label for (_, rec), jv in zip(asked, votes, strict=True)
                     if jv.label is not None]  # a judge that could not answer: no outcome
        events = [ev for ok in outcomes if (ev := self.audit.observe(ok)) is not None]
        snap = self.audit.snapshot()
        self._writes.put(Write([], [], [*events, {"event": "audit", "time": time.time(), **snap}]))
        self.metrics.audit, self.metrics.audit_queue = snap, len(self._audits)

    def _judge_all(self, items: list[Item], records: list[Record],
                   events: list[dict[str, Any]]) -> list[Record]:
        """While the certificate is refuted (fallback on): the judge decides every item the
        workers decided, and each such item is audited (re-certification needs evidence)."""
        assert self.audit is not None
        out = list(records)
        idx = [i for i, r in enumerate(records) if r.decided_by == "workers" and not r.error]
        votes = self._judge([items[i] for i in idx])  # on the request path: counted as judge calls
        outcomes: list[bool] = []
        for i, jv in zip(idx, votes, strict=True):
            if jv.label is None:
                continue  # the judge could not answer: the workers' answer stands
            rec = records[i]
            outcomes.append(jv.label == rec.label)
            out[i] = replace(rec, label=jv.label, decided_by="judge", judge_vote=jv,
                             latency_s=rec.latency_s + jv.latency_s,
                             rule=f"{rec.rule}; audit fallback: the judge decides")
        if self.audit.settings.scope == "dataset":
            outcomes += [True for r in records if r.decided_by == "judge" and not r.error]
        events.extend(ev for ok in outcomes if (ev := self.audit.observe(ok)) is not None)
        snap = self.audit.snapshot()
        events.append({"event": "audit", "time": time.time(), **snap})
        self.metrics.audit = snap
        return out
