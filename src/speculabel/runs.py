"""A resumable run over a table: the library behind ``speculabel classify``.

:class:`FileRun` scans the input (bad rows become ``input`` records), opens the results file
(refusing a foreign file or other settings, locking it against a second run), works out what a
previous run left to do, and :meth:`FileRun.records` decides it: each record is written before it
is yielded, a bad row's record at its row's place, so a caller that stops iterating, or a process
that is killed, loses nothing finished and a rerun does nothing twice.  The journal is fsynced
once a batch, before the next batch is decided (a power cut loses at most the batch in hand,
which a rerun decides again).

**Memory is flat in the input's length:** the input is streamed (:mod:`speculabel.io.scan`:
scanned once before any model loads, 8 bytes a row for a moment, then read as the cascade asks),
decided a batch at a time, and each record goes straight to the file; the run keeps none of its
own ids (one record a row, rows rising: checked) and its latencies in bounded memory.  What
stays is the ids of the records a resumed file already held (16 bytes each,
:mod:`speculabel.io.idset`), and a string per bad row that needs an id or id that repeats.
Adaptive runs (``cfg.adaptive``) go through :mod:`speculabel.adaptive` and hold the input and
the records in memory (their order is a permutation of the whole input).
The CLI only adds the progress bar and the messages::

    run = FileRun("tweets.csv", "out.jsonl", load_config("cascade.toml"),
                  columns={"text": "tweet"}, id_column="id")
    for record in run.records():
        ...
    print(run.stats.summary())
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from speculabel.cascade.config import CascadeConfig
from speculabel.io.results import ResultsFile, RunInfo
from speculabel.io.scan import TableScan
from speculabel.io.tables import RowError
from speculabel.records import Item, Record
from speculabel.tasks import Task

Note = Callable[[str], Any]


class FileRun:
    """One run of a cascade over a table into a results file (see the module docstring).

    Everything that can be wrong with the input or the output is raised here
    (:class:`~speculabel.io.tables.InputError`, :class:`~speculabel.io.results.ResultsError`),
    before any model loads.
    """

    def __init__(self, input: str | Path, output: str | Path, cfg: CascadeConfig,
                 task: Task | None = None, *, columns: dict[str, str] | None = None,
                 id_column: str | None = None, delimiter: str | None = None,
                 limit: int | None = None, allow_changed_run: bool = False) -> None:
        from speculabel.tasks import load_task

        self.cfg = cfg
        self.task = task or load_task(cfg.task)
        self.input, self.output = Path(input), Path(output)
        if (self.input.exists() and self.output.exists()
                and self.input.resolve() == self.output.resolve()):
            from speculabel.io.results import ResultsError

            raise ResultsError(f"the output {self.output} is the input file; give another -o")
        self.scan = TableScan(self.input, self.task, columns=columns, id_column=id_column,
                              delimiter=delimiter, limit=limit)
        run = RunInfo(
            settings={**cfg.decision_settings(), "task_prompt": self.task.fingerprint()},
            input={"path": str(self.input.resolve()), "columns": columns or {},
                   "id_column": id_column},
        )
        self.results = ResultsFile(self.output, run, allow_changed_run=allow_changed_run)
        self._held = int(self.results.saved)  # records the file held before this run
        #: rows within the limit; of those: already in the file, items and bad rows to do
        self.n_rows = self.scan.n_rows
        self.skipped, self.n_items, self.n_bad = self.scan.count_done(self.results.ids)
        self.n_todo = self.n_items + self.n_bad
        self.stats: Any = None  # the cascade's stats once it runs
        self.statement: str | None = None  # an adaptive run's certified statement
        self.session: Any = None  # an adaptive run's session (report, its path)
        self._started = False
        self._last_row = 0  # the row of the last record a streamed run wrote

    # The input as lists, read when first asked for (into memory): the adaptive path uses them.
    @cached_property
    def rows(self) -> list[Item | RowError]:
        return list(self.scan.entries())

    @cached_property
    def todo(self) -> list[Item | RowError]:
        return [r for r in self.rows if not self.results.is_done(r)]

    @property
    def items(self) -> list[Item]:
        return [r for r in self.todo if isinstance(r, Item)]

    @property
    def bad_rows(self) -> list[RowError]:
        return [r for r in self.todo if isinstance(r, RowError)]

    def _todo_entries(self) -> Iterator[Item | RowError]:
        """The entries left to do, streamed from the input."""
        return (e for e in self.scan.entries() if not self.results.is_done(e))

    @property
    def saved(self) -> int:
        """Records this run has written (the file's count less what it held when opened)."""
        return int(self.results.saved) - self._held

    @property
    def dropped_retryable(self) -> int:
        """Records of a retryable error (judge unavailable) that this run decides again."""
        return self.results.dropped_retryable

    def _write(self, record: Record, streamed: bool = False) -> None:
        """Write a record.  ``streamed``: fsynced with its batch, and its id not kept in memory
        (the rows are distinct and come in order, checked here)."""
        from speculabel.interrupt import deferred

        if streamed:
            self._in_order(record.row)
        with deferred():  # a Ctrl-C never cuts a record in two or miscounts it
            self.results.write(record, sync=not streamed, remember=not streamed)

    def _write_bad(self, bad: RowError, streamed: bool = False) -> Record:
        from speculabel.interrupt import deferred

        if streamed:
            self._in_order(bad.row)
        with deferred():
            return self.results.write_bad_row(bad, sync=not streamed, remember=not streamed)

    def _in_order(self, row: int | None) -> None:
        """A streamed run writes one record a row, rows rising: then no id comes twice."""
        if row is None or row <= self._last_row:
            raise RuntimeError(f"{self.output}: a record for row {row} after row {self._last_row}"
                               " (each row is decided once, in order)")
        self._last_row = row

    def records(self, store: Any = None, note: Note = lambda m: None) -> Iterator[Record]:
        """Decide what is left, yielding each record once it is written.  ``store``: a vote
        store (:class:`~speculabel.io.votes.VoteStore`) or None; ``note``: where progress notes
        go.  The output stays locked while this runs; a run decides once (a second call
        raises: make a new :class:`FileRun` to resume)."""
        if self._started:
            raise RuntimeError("FileRun.records() runs once; make a new FileRun to resume")
        self._started = True
        with self.results:
            if self.cfg.adaptive:  # no input order to keep
                for bad in self.bad_rows:
                    yield self._write_bad(bad)
                if self.items:
                    yield from self._adaptive(store, note)
            elif not self.n_items:  # bad rows only: no model is loaded
                for entry in self._todo_entries():
                    if isinstance(entry, RowError):
                        yield self._write_bad(entry, streamed=True)
                self.results.sync()
            else:
                yield from self._cascade(store, note)

    def _cascade(self, store: Any, note: Note) -> Iterator[Record]:
        from speculabel.cascade.build import build_cascade

        for spec, where in learner_dirs(self.cfg.workers, self.cfg.models, self.output).items():
            self.cfg.models.setdefault(spec, {})["directory"] = str(where)
            note(f"{spec} keeps its labels and model in {where}")
        cascade = build_cascade(self.cfg, vote_store=store, task=self.task, progress=note)
        self.stats = cascade.stats
        held: deque[RowError] = deque()  # bad rows read ahead of the records before them
        out = [0]  # items handed to the cascade whose records have not come back

        def items() -> Iterator[Item]:
            for entry in self._todo_entries():
                if isinstance(entry, RowError):
                    held.append(entry)
                    continue
                if not out[0]:  # every record so far is written: one fsync for the batch
                    self.results.sync()
                out[0] += 1
                yield entry

        try:
            for rec in cascade.classify_iter(items()):
                out[0] -= 1
                while held and rec.row is not None and held[0].row < rec.row:
                    yield self._write_bad(held.popleft(), streamed=True)
                self._write(rec, streamed=True)
                yield rec
            while held:
                yield self._write_bad(held.popleft(), streamed=True)
            self.results.sync()
        finally:
            cascade.close()

    def _adaptive(self, store: Any, note: Note) -> Iterator[Record]:
        from speculabel.adaptive.session import AdaptiveSession, FiniteSession

        kind = (FiniteSession if self.cfg.adaptive_settings().method == "rank"
                else AdaptiveSession)
        session = kind(self.cfg, self.task, self.rows, self.results, self.output, store, note)
        self.stats, self.session = session.stats, session
        for rec in session.records():
            self._write(rec)
            yield rec
        self.statement = session.finish()

    def run(self, store: Any = None, note: Note = lambda m: None) -> FileRun:
        """Decide everything left; this run, with its ``stats``."""
        for _ in self.records(store, note):
            pass
        return self


def learner_dirs(workers: list[str], models: dict[str, dict[str, Any]],
                 output: Path) -> dict[str, Path]:
    """Where each learning worker without a directory of its own persists: beside the results
    file (``OUT.learner-minilm``, ``OUT.similarity-minilm``), so that a resumed run continues
    with what it had learnt."""
    from speculabel.certify.workflow import learning

    out: dict[str, Path] = {}
    for spec in workers:
        if learning(spec) and "@" not in spec and "directory" not in models.get(spec, {}):
            out[spec] = output.with_name(f"{output.name}.{spec.replace(':', '-')}")
    return out


def classify_file(input: str | Path, output: str | Path, config: CascadeConfig | str | Path,
                  *, votes: str | Path | bool | None = None, **options: Any) -> FileRun:
    """Run (or resume) a cascade over a table into a results file, as ``speculabel classify``
    does: ``config`` is a cascade.toml path or a :class:`CascadeConfig`; ``votes`` a vote-store
    path (None: the default store; False: none); ``options`` those of :class:`FileRun`."""
    from speculabel.cascade.config import load_config

    cfg = config if isinstance(config, CascadeConfig) else load_config(Path(config))
    run = FileRun(input, output, cfg, **options)
    store = None
    if votes is not False:
        from speculabel.io.paths import votes_path
        from speculabel.io.votes import VoteStore

        store = VoteStore(votes_path(None if votes in (None, True) else Path(str(votes))))
    try:
        return run.run(store)
    finally:
        if store is not None:
            store.close()
