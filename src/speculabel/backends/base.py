"""The one interface every model kind implements: a batch of items in, one vote per item out.

Besides :meth:`Backend.score` (the only abstract method) a kind may override two cheap hooks:
:meth:`Backend.check_spec` (a classmethod: can this spec, with these options, score this task?
Runs before any model loads, so a bad setup fails at once) and :meth:`Backend.check_task` (the
same question asked of a loaded backend).  ``cacheable = False`` says its votes must not be kept
in a vote store (a learner changes as it learns).  Optional capabilities are Protocols in
:mod:`speculabel.backends.capabilities`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar

from speculabel.errors import SpeculabelError
from speculabel.records import Item, Vote, probability_problem
from speculabel.tasks import Task


class BackendError(SpeculabelError, RuntimeError):
    """A model could not be loaded or reached at all (as opposed to one item failing)."""


class Backend(ABC):
    """A model that returns a probability distribution over a task's labels.

    ``score`` must return exactly one :class:`Vote` per input item, in order.  An item that the
    model cannot answer becomes an abstention (``Vote.abstain``) with its reason; it never turns
    silently into some label.
    """

    #: the spec string the user wrote (``smollm2-135m``, ``openai:m@url``, ``vader`` ...)
    spec: str = ""
    #: votes depend on (model, task, item) alone, so a vote store may keep them
    cacheable: ClassVar[bool] = True
    #: how many items this model scores best in one call when it is cheap (embeddings,
    #: lexicons: hundreds); None for models whose cost is per item (LLMs), which the cascade
    #: keeps to its own batch size so that progress and a stop are seen often
    batch_hint: ClassVar[int | None] = None

    @property
    def name(self) -> str:
        return self.spec

    @classmethod  # noqa: B027 - an optional hook, empty by default
    def check_spec(cls, spec: str, options: dict[str, Any], task: Task | None = None) -> None:
        """Raise :class:`BackendError` if this spec and these options cannot work (or cannot
        score ``task``, when given).

        Cheap (no model is loaded, no server asked): it runs for every backend of a setup before
        the first one loads.
        """

    def check_task(self, task: Task) -> None:  # noqa: B027 - optional hook
        """Raise :class:`BackendError` if this backend cannot score ``task``."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A stable identity of the model itself (file hash, endpoint+model): keys cached votes."""

    def vote_fingerprint(self, task: Task) -> str:
        """What keys this backend's cached votes on ``task``: :meth:`fingerprint`, plus whatever
        makes its votes on this task differ from another setting's (a default that applies to
        some tasks only, such as label pruning on many-label tasks)."""
        return self.fingerprint()

    @abstractmethod
    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        """One vote per item, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (model memory, HTTP clients)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BackendWrapper(Backend):
    """A backend that changes how another one's votes are kept or shown (cache, calibration)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.spec = inner.spec

    @property
    def name(self) -> str:
        return self.inner.name

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def vote_fingerprint(self, task: Task) -> str:
        return self.inner.vote_fingerprint(task)

    def check_task(self, task: Task) -> None:
        self.inner.check_task(task)

    def close(self) -> None:
        self.inner.close()


def unwrap(backend: Backend) -> Backend:
    """The model backend under any wrappers (where its optional capabilities live)."""
    while isinstance(backend, BackendWrapper):
        backend = backend.inner
    return backend


ProbaFn = Callable[[Task, Sequence[Item]], Sequence[dict[str, float]]]


class FunctionBackend(Backend):
    """Wraps a plain Python function ``(task, items) -> [ {label: prob} ]`` as a backend.

    For user code (rules, scikit-learn pipelines) and for unit tests of pure logic.
    """

    def __init__(self, spec: str, fn: ProbaFn, *, method: str = "classifier") -> None:
        self.spec = spec
        self._fn = fn
        self._method = method

    def fingerprint(self) -> str:
        return f"fn:{self.spec}"

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        t0 = time.perf_counter()
        try:
            dists = list(self._fn(task, items))
        except Exception as e:  # a user function failing is an abstention, not a crash
            dt = (time.perf_counter() - t0) / max(1, len(items))
            return [Vote.abstain(self.spec, f"{type(e).__name__}: {e}", latency_s=dt) for _ in items]
        if len(dists) != len(items):
            raise BackendError(f"{self.spec}: returned {len(dists)} results for {len(items)} items")
        dt = (time.perf_counter() - t0) / max(1, len(items))
        return [self._vote(task, d, dt) for d in dists]

    def _vote(self, task: Task, d: Any, dt: float) -> Vote:
        """A returned distribution as a vote; anything unusable (not a mapping, NaN, negative
        or non-numeric values, no mass on any label) is an abstention saying why."""
        if not isinstance(d, dict):
            return Vote.abstain(self.spec, f"returned {type(d).__name__}, not a dict of "
                                           "label probabilities", latency_s=dt)
        values: dict[str, float] = {}
        for lab in task.label_names:
            p = d.get(lab, 0.0)
            why = probability_problem(lab, p)
            if why is not None:
                return Vote.abstain(self.spec, why, latency_s=dt)
            values[lab] = float(p)
        total = sum(values.values())
        if total <= 0:
            return Vote.abstain(self.spec, "no probability on any label", latency_s=dt)
        probs = {lab: p / total for lab, p in values.items()}
        return Vote.from_probs(self.spec, probs, latency_s=dt, method=self._method)
