"""Every model's vote on the calibration items: from the vote store, computed where missing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from speculabel.records import Item, Vote
from speculabel.tasks import Task


def collect_votes(
    task: Task,
    items: Sequence[Item],
    specs: Sequence[str],
    store: Any,
    *,
    batch_size: int = 16,
    progress: Callable[[str, int, int], None] | None = None,
    backend_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[Vote]]:
    """Every model's raw vote on every item, from the vote store where present, else computed.

    ``store`` is a :class:`speculabel.votestore.VoteStore` (or ``None`` to compute everything);
    computed votes are written to it batch by batch, so an interrupted run loses at most one
    batch.  Models are loaded one at a time, and not at all when the store has all their votes.
    """
    from speculabel.backends.cached import CachedBackend
    from speculabel.backends.registry import load_backend
    from speculabel.io.votes import item_key

    out: dict[str, list[Vote]] = {}
    keys = [item_key(task, it) for it in items]
    for spec in specs:
        backend = load_backend(spec, **dict((backend_options or {}).get(spec, {})))
        try:
            scorer: Any = backend
            if store is not None and backend.cacheable:
                scorer = CachedBackend(backend, store)
                hits = store.get_many(scorer.vote_fingerprint(task), task.fingerprint(), keys)
                if len(hits) == len(set(keys)):
                    out[spec] = [replace(hits[k], model=spec) for k in keys]
                    if progress:
                        progress(spec, len(items), len(items))
                    continue
            votes: list[Vote] = []
            for i in range(0, len(items), batch_size):
                votes.extend(scorer.score(task, items[i : i + batch_size]))
                if progress:
                    progress(spec, len(votes), len(items))
            out[spec] = votes
        finally:
            backend.close()
    return out


def stored_votes(
    task: Task, items: Sequence[Item], specs: Sequence[str], store: Any
) -> dict[str, list[Vote | None]]:
    """Each model's stored vote per item (``None`` where the store has none); computes nothing.

    Each model is loaded only to read its fingerprint.
    """
    from speculabel.backends.registry import load_backend
    from speculabel.io.votes import item_key

    keys = [item_key(task, it) for it in items]
    out: dict[str, list[Vote | None]] = {}
    for spec in specs:
        backend = load_backend(spec)
        try:
            fp = backend.vote_fingerprint(task)
        finally:
            backend.close()
        hits = store.get_many(fp, task.fingerprint(), keys)
        out[spec] = [
            replace(hits[k], model=spec) if k in hits else None for k in keys
        ]
    return out
