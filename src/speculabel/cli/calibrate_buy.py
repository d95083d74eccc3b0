"""``speculabel calibrate --buy sequential``: the judge labels a growing random sample of the
input, not all of it (:mod:`speculabel.certify.buying`), and the certified cascade.toml is
written as ``calibrate`` writes it.  The judge's and the fixed workers' votes go through the
vote store, so a rerun pays for no label twice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from speculabel.backends.base import Backend, BackendWrapper
from speculabel.cli.common import echo_note, fail
from speculabel.records import Item, Vote
from speculabel.tasks import Task


class _Progress(BackendWrapper):
    """Says how many judge labels have been bought so far (they are bought in batches)."""

    def __init__(self, inner: Backend, quiet: bool) -> None:
        super().__init__(inner)
        self.quiet, self.done = quiet, 0

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        votes = self.inner.score(task, items)
        self.done += len(items)
        echo_note(f"  judge: {self.done} labels bought", self.quiet)
        return votes


def buy_and_write(output: Path, the_task: Any, task_ref: str, items: list[Any],
                  worker_specs: list[str], judge_spec: str, *, scope: str, target: float,
                  delta: float, policy: str, fit_fraction: float | str | None, method: str,
                  votes: Path | None, first: int | None, volume: int | None, seed: int,
                  quiet: bool) -> None:
    """Certify with labels bought look by look; write ``output`` or exit 1 (nothing
    certified) or 2 (a model or the store failed)."""
    from speculabel.backends.base import BackendError, unwrap
    from speculabel.backends.cached import CachedBackend
    from speculabel.backends.learner.base import LearningWorker
    from speculabel.backends.registry import load_backend
    from speculabel.certify.api import CalibrationError, calibrate
    from speculabel.io.paths import votes_path
    from speculabel.io.votes import VoteStore, VoteStoreError

    store_path = votes_path(votes)
    echo_note(f"{len(items)} calibration items; the judge labels a growing random sample of "
              f"them (votes in {store_path})", quiet)
    try:
        with VoteStore(store_path) as store:
            models = [load_backend(s) for s in worker_specs]
            workers = [m if isinstance(unwrap(m), LearningWorker) else CachedBackend(m, store)
                       for m in models]
            judge = _Progress(CachedBackend(load_backend(judge_spec), store), quiet)
            cert = calibrate(task=the_task, workers=workers, items=items, judge=judge,
                             scope=scope, target=target, delta=delta, policy=policy,
                             fit_fraction=fit_fraction, method=method, seed=seed,
                             buy="sequential", first=first, volume=volume)
    except (CalibrationError, BackendError, VoteStoreError, ValueError) as e:
        raise fail(str(e)) from None
    ex = cert.extra
    for lk in ex["looks"]:
        got = ("error: " + lk["error"] if lk.get("error") else
               f"certified coverage {100 * (lk['coverage'] or 0):.1f}%")
        echo_note(f"  look at {lk['items']} items: {got}", quiet)
    echo_note(f"judge labels bought: {ex['labels_bought']} of {ex['items']} ({len(ex['looks'])} "
              f"of {ex['looks_planned']} planned looks, each at delta/{ex['looks_planned']})",
              quiet)
    if cert.threshold is None or cert.judge_call_rate is None or cert.judge_call_rate >= 1:
        typer.secho(f"{cert.statement}. Nothing written.", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(1)
    path = cert.save(output, judge=judge_spec, task=task_ref)
    typer.echo(f"guarantee: {cert.statement}", err=True)
    typer.echo(f"wrote {path}: use it with  speculabel classify INPUT -o OUT --config {path}")
