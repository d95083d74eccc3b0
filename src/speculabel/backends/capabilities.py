"""Optional capabilities of a backend, as Protocols checked when a cascade is built.

A backend has a capability when it has the method (``isinstance(b, Learner)``): no registration,
no base class to inherit.  Wrappers (vote cache, calibration) never have them; ask the backend
under them (:func:`speculabel.backends.base.unwrap`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from speculabel.records import Item


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


def forget_caches(backends: Iterable[object]) -> None:
    """Every backend (unwrapped) that keeps per-text work starts the next timing without it, so
    a timing never profits from a text the previous one embedded."""
    from speculabel.backends.base import Backend, unwrap

    for b in backends:
        inner = unwrap(b) if isinstance(b, Backend) else b
        if isinstance(inner, Memoising):
            inner.forget_cache()
