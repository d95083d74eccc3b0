"""A finite adaptive run as a ``decide`` function, for callers that make their own items:
``match --adaptive`` decides its candidate pairs with it (the rank method of
:mod:`speculabel.adaptive.finite`), with no labelled pairs and no calibration beforehand.

The candidate pairs are a finite input known up front, so the run is the one ``classify
--adaptive`` makes on a file: the judge labels a random fit share (the learning workers learn
from it), the pairs are ranked by the workers' soft vote, judge labels are bought until a rank
cut is certified, and the workers decide the pairs above the cut. Statement: with probability at
least 1 - delta over the draw of the certification labels, agreement with the judge over these
candidate pairs (matches and non-matches together, judge-decided pairs agreeing) is at least the
target. It does not bound the precision of the matches alone (``certify_matches`` does).

The run's state (fit ids, every judge answer, the certificate) is ``OUT.adaptive/finite.json``:
after a kill, the rerun pays for no judge label twice and never certifies again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend
from speculabel.records import Item, Record
from speculabel.tasks import Task


class AdaptiveDecider:
    """A ``decide`` (e.g. for :func:`speculabel.match.run.run_match`) that wants every item
    (``wants_all``): the certificate is about all of them, decided in this run or before."""

    wants_all = True

    def __init__(self, cfg: Any, task: Task, state_path: Path | None,
                 note: Callable[[str], Any] = lambda m: None,
                 models: Sequence[Backend] | None = None) -> None:
        """``models``: the workers and then the judge, already built (else loaded from
        ``cfg`` on the first call)."""
        self.cfg, self.task, self.state_path, self.note = cfg, task, state_path, note
        self.models = list(models) if models is not None else None
        self.settings = cfg.adaptive_settings()
        self.settings.check()
        if self.settings.method != "rank":
            raise ValueError("match --adaptive certifies whole-data agreement over the candidate "
                             "pairs (the rank method): leave out scope workers / method stream")
        self.state: Any = None

    def __call__(self, items: Sequence[Item], done: set[str]) -> Iterator[Record]:
        from speculabel.adaptive.finite import FiniteRun, FiniteState
        from speculabel.cascade.build import load_backends

        self.state = FiniteState.open(self.state_path, len(items), self.settings)
        loaded = self.models or load_backends([*self.cfg.workers, self.cfg.judge], self.task,
                                              self.cfg.models, self.note)
        run = FiniteRun(self.task, loaded[:-1], loaded[-1], self.settings, items, self.state,
                        batch_size=self.cfg.batch_size, note=self.note)
        try:
            yield from run.run(done)
        finally:
            run.close()

    def certificate(self) -> dict[str, Any]:
        """What the match statement quotes: the run's statement, scope ``adaptive``."""
        from speculabel.adaptive.finite import statement

        if self.state is None:
            return {}
        c = self.state.certificate or {}
        return {"scope": "adaptive", "promise": statement(self.state),
                "certified": bool(c.get("kept"))}
