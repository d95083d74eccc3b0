"""Optional capabilities of a backend, as Protocols checked when a cascade is built.

A backend has a capability when it has the method (``isinstance(b, Learner)``): no registration,
no base class to inherit.  Wrappers (vote cache, calibration) never have them; ask the backend
under them (:func:`speculabel.backends.base.unwrap`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from speculabel.records import Item

if TYPE_CHECKING:
    from speculabel.backends.base import Backend
    from speculabel.tasks import Task


@runtime_checkable
class Learner(Protocol):
    """A worker that learns from labels (the judge's, or gold ones) as they come in."""

    def observe(self, items: Sequence[Item], labels: Sequence[str | None]) -> bool:
        """Take these labels; True when the worker retrained (its votes changed)."""
        ...


@runtime_checkable
class Reachable(Protocol):
    """A backend behind a server: ``check`` asks it once, cheaply, whether it can serve."""

    def check(self) -> None:
        """Raise :class:`~speculabel.backends.base.BackendError` when the server cannot serve."""
        ...


@runtime_checkable
class Memoising(Protocol):
    """A backend that keeps per-text work (embeddings) between calls: a timing that compares it
    with the judge must start it cold, or the second run over the same items costs nothing."""

    def forget_cache(self) -> None:
        """Drop what was kept, so the next call pays for every item again."""
        ...


def forget_caches(backends: Iterable[Backend]) -> None:
    """Every backend (unwrapped) that keeps per-text work starts the next timing without it, so
    a timing never profits from a text the previous one embedded."""
    from speculabel.backends.base import unwrap

    for b in backends:
        inner = unwrap(b)
        if isinstance(inner, Memoising):
            inner.forget_cache()


def warm_up(backends: Sequence[Backend], task: Task, items: Sequence[Item]) -> None:
    """Before a timing: every model scores the first item untimed (lazy loads, the prompt
    prefix evaluated once), then drops what it kept per text, so the timing pays for every item
    as a long run does."""
    for b in backends:
        b.score(task, list(items[:1]))
    forget_caches(backends)
