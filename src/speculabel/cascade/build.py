"""From settings to a running cascade: check every part first, then load the models.

Every backend is checked against the task before the first one loads (a lexicon that cannot
score the task, an unknown model, a missing file, an unknown option), so a bad setup fails in a
second with the reason, never after minutes of loading.  An in-process judge is loaded when the
first item escalates (:class:`LazyBackend`): a cascade certified to need no judge runs without
ever paying for its gigabytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from speculabel.backends.base import Backend
from speculabel.backends.cached import VoteCache
from speculabel.backends.capabilities import Reachable
from speculabel.cascade.config import CascadeConfig
from speculabel.cascade.run import Cascade
from speculabel.records import Item, Vote
from speculabel.tasks import Task

#: model kinds worth loading only when first asked (in-process LLMs: seconds and gigabytes)
LAZY_KINDS = ("llamacpp",)


class LazyBackend(Backend):
    """A backend loaded (and checked, as :func:`load_backends` does) on its first ``score``.

    Only for cacheable kinds whose spec was checked beforehand (:func:`check_setup`), so a load
    that fails then is a broken install, not a bad setting.
    """

    def __init__(self, spec: str, task: Task, options: dict[str, Any] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self._task = task
        self._options = dict(options or {})
        self._progress = progress
        self._inner: Backend | None = None

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def _backend(self) -> Backend:
        if self._inner is None:
            self._inner = load_backends([self.spec], self._task, {self.spec: self._options},
                                        self._progress)[0]
        return self._inner

    def fingerprint(self) -> str:
        return self._backend().fingerprint()

    def vote_fingerprint(self, task: Task) -> str:
        return self._backend().vote_fingerprint(task)

    def check_task(self, task: Task) -> None:
        if self._inner is not None:
            self._inner.check_task(task)

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        return self._backend().score(task, items) if items else []

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None


def lazy(spec: str) -> bool:
    """Is this spec's model loaded on first use?"""
    from speculabel.backends.registry import backend_class, kind_of

    return kind_of(spec) in LAZY_KINDS and backend_class(spec).cacheable


def check_setup(cfg: CascadeConfig, task: Task) -> None:
    """Raise :class:`~speculabel.backends.base.BackendError` for the first part that cannot
    work; no model is loaded."""
    from speculabel.backends.registry import check_spec

    for spec in [*cfg.workers, *([cfg.judge] if cfg.judge else [])]:
        check_spec(spec, task, **cfg.models.get(spec, {}))


def load_backends(
    specs: list[str],
    task: Task,
    options: dict[str, dict[str, object]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Backend]:
    """Load each backend, ask servers whether they serve, check it against the task; on any
    failure, close what was loaded and re-raise."""
    from speculabel.backends.registry import load_backend
    from speculabel.interrupt import check

    loaded: list[Backend] = []
    try:
        for spec in specs:
            check()  # a Ctrl-C while a model loaded stops here
            if progress:
                progress(f"loading {spec}")
            backend = load_backend(spec, **(options or {}).get(spec, {}))
            loaded.append(backend)
            if isinstance(backend, Reachable):
                backend.check()
            backend.check_task(task)
    except BaseException:
        for b in loaded:
            b.close()
        raise
    return loaded


def build_cascade(
    cfg: CascadeConfig,
    *,
    vote_store: VoteCache | None = None,
    task: Task | None = None,
    progress: Callable[[str], None] | None = None,
) -> Cascade:
    """Check the setup, load every model a config names and assemble the cascade."""
    from speculabel.policy import make_policy
    from speculabel.tasks import load_task

    task = task or load_task(cfg.task)
    check_setup(cfg, task)
    later = cfg.judge is not None and lazy(cfg.judge)
    specs = [*cfg.workers, *([cfg.judge] if cfg.judge and not later else [])]
    loaded = load_backends(specs, task, cfg.models, progress)
    workers = loaded[: len(cfg.workers)]
    judge: Backend | None = None
    if cfg.judge is not None:
        judge = (LazyBackend(cfg.judge, task, cfg.models.get(cfg.judge), progress) if later
                 else loaded[len(cfg.workers)])
    try:
        return Cascade(
            task,
            workers,
            judge,
            make_policy(cfg.policy, cfg.threshold, weights=cfg.weights),
            early_exit=cfg.early_exit,
            parallel_workers=cfg.parallel_workers,
            vote_store=vote_store,
            batch_size=cfg.batch_size,
            calibration={k: v.model_dump() for k, v in cfg.calibration.items()},
        )
    except BaseException:
        for b in [*loaded, *([judge] if later and judge is not None else [])]:
            b.close()
        raise
