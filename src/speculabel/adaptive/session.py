"""One adaptive run over a table, as a library: the state beside the output, the learning
workers in it, the records in the adaptive order, and the certified statement at the end
(:class:`speculabel.runs.FileRun` drives it; ``classify --adaptive`` prints it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from speculabel.records import Item, Record
from speculabel.tasks import Task


def state_dir(output: Path) -> Path:
    """Where an adaptive run keeps its state: ``OUT.adaptive/``."""
    return output.with_name(output.name + ".adaptive")


class AdaptiveSession:
    """Opens (or resumes) the state, loads the models, yields the records left to decide;
    :meth:`finish` writes ``OUT.adaptive.json`` and returns the certified statement."""

    def __init__(self, cfg: Any, task: Task, rows: list[Any], results: Any, output: Path,
                 store: Any, note: Callable[[str], Any]) -> None:
        from speculabel.adaptive.plan import order
        from speculabel.adaptive.run import AdaptiveCascade
        from speculabel.adaptive.state import AdaptiveState
        from speculabel.backends.cached import CachedBackend
        from speculabel.cascade.build import load_backends
        from speculabel.certify.workflow import learning
        from speculabel.io.votes import item_key

        self.output, self.results, self.note = output, results, note
        settings = cfg.adaptive_settings()
        settings.check()
        items = [r for r in rows if isinstance(r, Item)]
        perm = order([item_key(task, it) for it in items], settings.seed)
        self.positions = {items[j].id: p for p, j in enumerate(perm)}
        self.state = AdaptiveState.open(state_dir(output), settings, len(items))
        for spec in cfg.workers:
            if learning(spec) and "@" not in spec and "directory" not in cfg.models.get(spec, {}):
                cfg.models.setdefault(spec, {})["directory"] = str(self.state.learner_dir(spec))
        loaded = load_backends([*cfg.workers, cfg.judge], task, cfg.models, note)
        wrapped = [CachedBackend(b, store) if store is not None and b.cacheable else b
                   for b in loaded]
        self.cascade = AdaptiveCascade(task, wrapped[:-1], wrapped[-1], self.state,
                                       batch_size=cfg.batch_size)
        self.todo = [(p, items[j]) for p, j in enumerate(perm) if items[j].id not in results]
        self.n_items = len(items)
        self.report: dict[str, Any] = {}
        self.report_path: Path | None = None

    @property
    def stats(self) -> Any:
        return self.cascade.stats

    def records(self) -> Iterator[Record]:
        try:
            yield from self.cascade.run(self.todo, self.n_items - len(self.todo))
        finally:
            self.cascade.close()

    def finish(self) -> str:
        """Write ``OUT.adaptive.json``; the run's certified statement."""
        from speculabel.adaptive.report import report, statement, write_report

        done = [r for r in self.results.done.values() if r.id in self.positions]
        self.report = report(self.state, done, self.positions)
        self.report_path = write_report(self.report,
                                        self.output.with_name(self.output.name + ".adaptive.json"))
        return statement(self.state)

    @property
    def certified(self) -> bool:
        return bool(self.state.certified_looks)


class FiniteSession:
    """The same for ``--adaptive-method rank`` (:mod:`speculabel.adaptive.finite`): records in
    input order within each phase; :meth:`finish` writes ``OUT.adaptive.json``."""

    def __init__(self, cfg: Any, task: Task, rows: list[Any], results: Any, output: Path,
                 store: Any, note: Callable[[str], Any]) -> None:
        from speculabel.adaptive.finite import FiniteRun, FiniteState
        from speculabel.backends.cached import CachedBackend
        from speculabel.cascade.build import load_backends

        self.output, self.results, self.note = output, results, note
        settings = cfg.adaptive_settings()
        settings.check()
        self.items = [r for r in rows if isinstance(r, Item)]
        self.state = FiniteState.open(state_dir(output) / "finite.json", len(self.items),
                                      settings)
        loaded = load_backends([*cfg.workers, cfg.judge], task, cfg.models, note)
        wrapped = [CachedBackend(b, store) if store is not None and b.cacheable else b
                   for b in loaded]
        self.run = FiniteRun(task, wrapped[:-1], wrapped[-1], settings, self.items, self.state,
                             batch_size=cfg.batch_size, note=note)
        self.report: dict[str, Any] = {}
        self.report_path: Path | None = None

    @property
    def stats(self) -> Any:
        return self.run.stats

    def records(self) -> Iterator[Record]:
        done = {i for i in (str(it.id) for it in self.items) if i in self.results}
        try:
            yield from self.run.run(done)
        finally:
            self.run.close()

    def finish(self) -> str:
        from speculabel.adaptive.finite import statement
        from speculabel.adaptive.report import write_report

        done = [r for r in self.results.done.values()]
        decided = [r for r in done if r.label is not None]
        judged = sum(r.decided_by == "judge" for r in decided)
        self.report = {"method": "rank", "statement": statement(self.state),
                       "settings": self.run.settings.to_json(), "items": len(done),
                       "judge_calls": judged,
                       "judge_call_rate": judged / len(decided) if decided else None,
                       "certificate": self.state.certificate}
        self.report_path = write_report(self.report,
                                        self.output.with_name(self.output.name + ".adaptive.json"))
        return statement(self.state)

    @property
    def certified(self) -> bool:
        return bool(self.state.certificate and self.state.certificate.get("kept"))
