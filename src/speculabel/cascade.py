"""The cascade: workers vote, the policy decides, the judge labels what the workers cannot.

Items are processed in batches.  Each backend parallelises inside its own ``score`` call (HTTP
backends keep many requests in flight), and with ``parallel_workers`` the workers of a batch are
asked at the same time.  A record is emitted as soon as its item is decided: worker-decided items
of a batch come out before the judge is even asked about the rest.

A judge abstention whose reason starts with ``unavailable:`` (a server that is down) leaves the
item *pending*: no record is written, so the next run of the same command picks it up again,
and with a vote store the workers' votes are not paid for twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from speculabel.backends.base import Backend
from speculabel.backends.calibrated import CalibratedBackend
from speculabel.policy import Decision, Policy
from speculabel.records import Item, Record, Vote
from speculabel.task import Task

if TYPE_CHECKING:
    from speculabel.config import CascadeConfig

UNAVAILABLE = "unavailable:"


class VoteCache(Protocol):
    """What the cascade needs of a vote store (see :mod:`speculabel.votestore`)."""

    def get_many(self, model_fp: str, task_fp: str, keys: Sequence[str]) -> dict[str, Vote]: ...

    def put_many(self, model_fp: str, task_fp: str, rows: Sequence[tuple[str, Vote]]) -> None: ...


def _item_key(task: Task, item: Item) -> str:
    from speculabel.votestore import item_key

    return item_key(task, item)


class CachedBackend(Backend):
    """A backend whose votes are looked up in, and saved to, a vote store.

    Abstentions are never cached: a server that was down is asked again next time.
    """

    def __init__(self, inner: Backend, cache: VoteCache) -> None:
        self.inner = inner
        self.cache = cache
        self.spec = inner.spec
        self._fp: str | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = self.inner.fingerprint()
        return self._fp

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        keys = [_item_key(task, it) for it in items]
        fp, tfp = self.fingerprint(), task.fingerprint()
        hits = self.cache.get_many(fp, tfp, keys)
        missing = [i for i, k in enumerate(keys) if k not in hits]
        fresh: dict[int, Vote] = {}
        if missing:
            votes = self.inner.score(task, [items[i] for i in missing])
            fresh = dict(zip(missing, votes, strict=True))
            self.cache.put_many(
                fp, tfp, [(keys[i], v) for i, v in fresh.items() if v.label is not None]
            )
        out = []
        for i, k in enumerate(keys):
            if i in fresh:
                out.append(fresh[i])
            else:
                v = hits[k]
                out.append(Vote(**{**v.__dict__, "model": self.name, "cached": True}))
        return out

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, attr: str) -> object:  # pass through e.g. a learner's ``observe``
        return getattr(self.inner, attr)


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
        from speculabel.metrics import percentile

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
        calibration: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if not workers:
            raise ValueError("a cascade needs at least one worker")
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
            # a learning worker changes with every retrain: its votes are never cached
            if vote_store is not None and getattr(b, "cacheable", True):
                b = CachedBackend(b, vote_store)
            cal = calibration.get(b.name)
            if cal:
                b = CalibratedBackend(b, cal.get("offsets"), float(cal.get("temperature", 1.0)))
            return b

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
        lats = [v.latency_s for v in votes if not v.cached]
        if not lats:
            return 0.0
        return max(lats) if self.parallel_workers else sum(lats)

    def _run_batch(self, batch: list[Item]) -> Iterator[Record]:
        n_workers = len(self.workers)
        item_votes: list[list[Vote]] = [[] for _ in batch]
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
                )
                self.stats.add(rec)
                yield rec
            else:
                escalate.append(i)
        if not escalate:
            return
        esc_items = [batch[i] for i in escalate]
        if self.judge is None:
            for i in escalate:
                rec = Record(
                    id=batch[i].id, label=None, decided_by=None, votes=item_votes[i],
                    latency_s=self._combine(item_votes[i]),
                    rule=f"{self.policy.describe()}: {decisions[i].reason}",
                    error="escalated, but the cascade has no judge",
                )
                self.stats.add(rec)
                yield rec
            return
        judge_votes = self.judge.score(self.task, esc_items)
        learned_items: list[Item] = []
        learned_labels: list[str] = []
        for i, jv in zip(escalate, judge_votes, strict=True):
            item, votes = batch[i], item_votes[i]
            if jv.label is None and (jv.error or "").startswith(UNAVAILABLE):
                self.stats.pending += 1  # left for the next run; nothing written
                continue
            rec = Record(
                id=item.id,
                label=jv.label,
                decided_by="judge",
                votes=votes,
                judge_vote=jv,
                latency_s=self._combine(votes) + (0.0 if jv.cached else jv.latency_s),
                rule=f"{self.policy.describe()}: {decisions[i].reason}",
                truncated=item.truncated or jv.truncated or any(v.truncated for v in votes),
                error=None if jv.label is not None else f"judge abstained: {jv.error}",
            )
            if jv.label is not None:
                learned_items.append(item)
                learned_labels.append(jv.label)
            self.stats.add(rec)
            yield rec
        if learned_items:
            for w in self.workers:
                observe = getattr(w, "observe", None)
                if callable(observe):
                    observe(learned_items, learned_labels)

    def close(self) -> None:
        for b in [*self.workers, *([self.judge] if self.judge else [])]:
            b.close()


def build_cascade(
    cfg: CascadeConfig,
    *,
    vote_store: VoteCache | None = None,
    task: Task | None = None,
    progress: Callable[[str], None] | None = None,
) -> Cascade:
    """Load every model a config names and assemble the cascade (the CLI's and demo's path)."""
    from speculabel.backends.registry import load_backend
    from speculabel.policy import make_policy
    from speculabel.task import load_task

    task = task or load_task(cfg.task)
    loaded: list[Backend] = []
    try:
        for spec in [*cfg.workers, *([cfg.judge] if cfg.judge else [])]:
            if progress:
                progress(f"loading {spec}")
            backend = load_backend(spec, **cfg.models.get(spec, {}))
            check = getattr(backend, "check", None)
            if callable(check):
                check()
            loaded.append(backend)
    except BaseException:
        for b in loaded:
            b.close()
        raise
    workers = loaded[: len(cfg.workers)]
    judge = loaded[len(cfg.workers)] if cfg.judge else None
    policy = make_policy(cfg.policy, cfg.threshold, weights=cfg.weights)
    return Cascade(
        task,
        workers,
        judge,
        policy,
        early_exit=cfg.early_exit,
        parallel_workers=cfg.parallel_workers,
        vote_store=vote_store,
        batch_size=cfg.batch_size,
        calibration=cfg.calibration,
    )
