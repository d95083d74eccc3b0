"""``speculabel classify --engine ray``: the same checks, notes and exit statuses as the
single-process command, around :func:`speculabel.scale.ray_engine.classify_to_shards`.

Order: everything that needs no cluster (the engine's limits, the output directory, the vote
store, servers answering) is checked first; then Ray starts (or is joined), one pass over the
input's ids checks them; only then do the actors load their models.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from speculabel.cascade.config import CascadeConfig
from speculabel.cli.common import (
    EXIT_INTERRUPTED,
    echo_note,
    exit_if_pending,
    fail,
    print_summary,
    progress_bar,
    rate_text,
)
from speculabel.scale.settings import RaySettings
from speculabel.tasks import Task

EXIT_FAILED = 1


def _where(path: str) -> str:
    """A local path made absolute (what the manifest records); a URI as given."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _check_servers(cfg: CascadeConfig, task: Task) -> None:
    """Models behind servers are asked once, here, whether they serve (as the single-process
    run does when it loads them), so a server that is down fails in a second with exit 2."""
    from speculabel.cascade.build import load_backends
    from speculabel.scale.settings import is_server

    specs = [s for s in [*cfg.workers, cfg.judge] if s is not None and is_server(s)]
    for backend in load_backends(specs, task, cfg.models):
        backend.close()


def classify_ray(
    *,
    input: str,
    output: str,
    cfg: CascadeConfig,
    task: Task,
    columns: dict[str, str],
    id_column: str | None,
    settings: RaySettings,
    votes: Path | None,
    no_votes: bool,
    limit: int | None,
    allow_changed_run: bool,
    quiet: bool,
) -> None:
    """Run the cascade on Ray into the results directory ``output`` (see the module docstring)."""
    from speculabel.backends.base import BackendError
    from speculabel.io.paths import votes_path
    from speculabel.io.results import ResultsError, RunInfo
    from speculabel.io.tables import InputError
    from speculabel.io.votes import VoteStore, VoteStoreError
    from speculabel.models import ModelError
    from speculabel.scale.settings import EngineError, check_ray_setup
    from speculabel.scale.shards import ShardDir

    try:
        check_ray_setup(cfg, id_column)
    except EngineError as e:
        raise fail(str(e)) from None
    assert id_column is not None
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise fail("--engine ray needs Ray Data: pip install 'speculabel[ray]'") from None
    source, out = _where(input), _where(output)
    if "://" not in source and not os.path.exists(source):
        raise fail(f"input file not found: {input}")
    if source.rstrip("/") == out.rstrip("/"):
        raise fail(f"the output {output} is the input; give another -o")
    run = RunInfo(settings={**cfg.decision_settings(), "task_prompt": task.fingerprint()},
                  input={"path": source, "columns": columns, "id_column": id_column})
    try:
        shards = ShardDir(out, run, allow_changed_run=allow_changed_run)
    except ResultsError as e:
        raise fail(str(e)) from None
    if shards.duplicates:
        echo_note(f"{shards.duplicates} records of ids already recorded in another shard are "
                  "removed (a task of a killed run finished late)", quiet)
    store: str | None = None
    if not no_votes:
        store = str(votes_path(votes).expanduser().resolve())
        try:
            VoteStore(store).close()
        except VoteStoreError as e:
            raise fail(str(e)) from None
    try:
        _check_servers(cfg, task)
    except BackendError as e:
        raise fail(str(e)) from None
    _run(input=source, output=output, shards=shards, cfg=cfg, task=task, columns=columns,
         id_column=id_column, settings=settings, store=store, limit=limit, quiet=quiet,
         errors=(InputError, EngineError, BackendError, ModelError, ResultsError))


def _run(*, input: str, output: str, shards: Any, cfg: CascadeConfig, task: Task,
         columns: dict[str, str], id_column: str, settings: RaySettings, store: str | None,
         limit: int | None, quiet: bool, errors: tuple[type[Exception], ...]) -> None:
    import ray

    from speculabel.scale.ray_engine import RayRun, classify_to_shards, ensure_ray

    bar = _Progress(quiet)

    def started(r: RayRun) -> None:
        if r.skipped == r.rows:
            return
        if r.skipped:
            echo_note(f"resuming: {r.skipped} of {r.rows} rows already in {output}", quiet)
        echo_note("loading the models on the Ray actors", quiet)
        bar.start(r.rows - r.skipped)

    try:
        we_started = ensure_ray(settings.address, quiet)
    except Exception as e:  # ConnectionError, ValueError ... from ray.init
        raise fail(f"cannot start or reach Ray (address {settings.address or 'local'}): {e}") from None
    try:
        result = classify_to_shards(input, shards, cfg, task, id_column=id_column, columns=columns,
                                    settings=settings, votes=store, limit=limit,
                                    on_start=started, on_progress=bar.update)
    except errors as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the shards written so far are saved in {output}; rerun the "
                   "same command to resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as e:  # a failure inside Ray (a model's own error, a lost node ...)
        raise fail(f"the Ray run failed: {e}\nwhat was decided is saved in {output}; rerun the "
                   "same command to resume", EXIT_FAILED) from None
    finally:
        bar.stop()
        if we_started:
            ray.shutdown()
    if result.skipped == result.rows:
        typer.echo(f"nothing to do: all {result.rows} rows are in {output}")
        return
    summary: dict[str, Any] = dict(result.stats.summary())
    summary["shards_written"] = result.shards
    if result.duplicates_removed:
        summary["duplicates_removed"] = result.duplicates_removed
    summary["results"] = output
    print_summary(summary)
    exit_if_pending(result.stats.pending)


class _Progress:
    """A progress bar fed by the driver's shard summaries (nothing under ``--quiet``)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.perf_counter()

    def start(self, total: int) -> None:
        if self.quiet:
            return
        self._bar = progress_bar("classify (ray)")
        self._bar.start()
        self._task = self._bar.add_task("classify", total=total, rate="")
        self._t0 = time.perf_counter()

    def update(self, r: Any) -> None:
        if self._bar is None:
            return
        st = r.stats
        self._bar.update(self._task, completed=st.items + st.pending,
                         rate=rate_text(st, time.perf_counter() - self._t0))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
