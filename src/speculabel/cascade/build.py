"""From settings to a running cascade: check every part first, then load the models.

Every backend is checked against the task before the first one loads (a lexicon that cannot
score the task, an unknown model, a missing file, an unknown option), so a bad setup fails in a
second with the reason, never after minutes of loading.
"""

from __future__ import annotations

from collections.abc import Callable

from speculabel.backends.base import Backend
from speculabel.backends.cached import VoteCache
from speculabel.backends.capabilities import Reachable
from speculabel.cascade.config import CascadeConfig
from speculabel.cascade.run import Cascade
from speculabel.tasks import Task


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

    loaded: list[Backend] = []
    try:
        for spec in specs:
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
    specs = [*cfg.workers, *([cfg.judge] if cfg.judge else [])]
    loaded = load_backends(specs, task, cfg.models, progress)
    workers = loaded[: len(cfg.workers)]
    judge = loaded[len(cfg.workers)] if cfg.judge else None
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
        for b in loaded:
            b.close()
        raise
