"""A backend whose votes are looked up in, and saved to, a vote store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from speculabel.backends.base import Backend, BackendWrapper
from speculabel.records import Item, Vote
from speculabel.tasks import Task


class VoteCache(Protocol):
    """What a cached backend needs of a vote store (see :mod:`speculabel.io.votes`)."""

    def get_many(self, model_fp: str, task_fp: str, keys: Sequence[str]) -> dict[str, Vote]: ...

    def put_many(self, model_fp: str, task_fp: str, rows: Sequence[tuple[str, Vote]]) -> None: ...


class CachedBackend(BackendWrapper):
    """Votes come from the store when it has them; new votes go into it.

    Abstentions are never cached: a server that was down is asked again next time.
    """

    def __init__(self, inner: Backend, cache: VoteCache) -> None:
        super().__init__(inner)
        self.cache = cache
        self._fp: str | None = None
        self._vote_fps: dict[str, str] = {}  # task fingerprint -> the votes' key

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = self.inner.fingerprint()
        return self._fp

    def vote_fingerprint(self, task: Task) -> str:
        tfp = task.fingerprint()
        if tfp not in self._vote_fps:
            self._vote_fps[tfp] = self.inner.vote_fingerprint(task)
        return self._vote_fps[tfp]

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        from speculabel.io.votes import item_key

        keys = [item_key(task, it) for it in items]
        fp, tfp = self.vote_fingerprint(task), task.fingerprint()
        hits = self.cache.get_many(fp, tfp, keys)
        missing = [i for i, k in enumerate(keys) if k not in hits]
        fresh: dict[int, Vote] = {}
        if missing:
            votes = self.inner.score(task, [items[i] for i in missing])
            fresh = dict(zip(missing, votes, strict=True))
            self.cache.put_many(
                fp, tfp, [(keys[i], v) for i, v in fresh.items() if v.label is not None]
            )
        return [
            fresh[i] if i in fresh else replace(hits[k], model=self.name, cached=True)
            for i, k in enumerate(keys)
        ]
