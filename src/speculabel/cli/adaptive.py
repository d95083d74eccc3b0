"""``speculabel classify --adaptive``: one command that starts with the judge, learns from it,
hands more and more items to the workers as an audit certifies them, and ends with the
certified statement (:mod:`speculabel.adaptive`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from speculabel.cli.common import echo_note, fail, run_with_progress, stopped

AdaptiveOpt = Annotated[
    bool | None,
    typer.Option("--adaptive", help="Start with the judge, learn from it, and let the workers "
                                    "decide as a random audit certifies them; ends with the "
                                    "certified statement (see --target, --audit-rate).")]
TargetOpt = Annotated[float | None, typer.Option(
    help="--adaptive: the agreement to certify, between 0 and 1 [default: 0.85].")]
DeltaOpt = Annotated[float | None, typer.Option(
    help="--adaptive: allowed probability that the guarantee fails [default: 0.1].")]
ScopeOpt = Annotated[str | None, typer.Option(
    help="--adaptive: dataset (agreement with the judge over all items) or workers (on the items "
         "the workers decide) [default: dataset].")]
AuditOpt = Annotated[float | None, typer.Option(
    help="--adaptive: share of items that also go to the judge, whatever the workers say: the "
         "sample that certifies the threshold [default: 0.05].")]
WarmupOpt = Annotated[int | None, typer.Option(
    min=2, help="--adaptive: first items of the random order that all go to the judge (half "
                "train the workers, half start the audit) [default: 200].")]
RecertifyOpt = Annotated[int | None, typer.Option(
    min=1, help="--adaptive: items between two re-certifications [default: 500].")]
SeedOpt = Annotated[int | None, typer.Option(
    help="--adaptive: seed of the random order and of the audit [default: 0].")]


def check_adaptive_flags(**values: float | None) -> None:
    """The shares an adaptive run takes (--target, --delta, --audit-rate), each strictly between
    0 and 1, refused naming the flag (before the settings' own checks, which name keys)."""
    for key, value in values.items():
        if value is not None and not 0 < value < 1:
            flag = "--" + key.replace("_", "-")
            raise fail(f"{flag} must be between 0 and 1, both excluded, got {value:g}")


def state_dir(output: Path) -> Path:
    return output.with_name(output.name + ".adaptive")


def run_adaptive(cfg: Any, task: Any, rows: list[Any], results: Any, output: Path, store: Any,
                 quiet: bool) -> Any:
    """Run (or resume) the adaptive classification of ``rows`` into ``results``; returns the
    run's stats after writing ``OUT.adaptive.json`` and printing the certified statement."""
    from speculabel.adaptive.plan import order
    from speculabel.adaptive.report import report, statement, write_report
    from speculabel.adaptive.run import AdaptiveCascade
    from speculabel.adaptive.state import AdaptiveState
    from speculabel.backends.base import BackendError
    from speculabel.backends.cached import CachedBackend
    from speculabel.cascade.build import load_backends
    from speculabel.certify.workflow import learning
    from speculabel.io.votes import item_key
    from speculabel.models import ModelError
    from speculabel.records import Item

    settings = cfg.adaptive_settings()
    items = [r for r in rows if isinstance(r, Item)]
    perm = order([item_key(task, it) for it in items], settings.seed)
    positions = {items[j].id: p for p, j in enumerate(perm)}
    try:
        settings.check()
        state = AdaptiveState.open(state_dir(output), settings, len(items))
    except (ValueError, OSError) as e:
        raise fail(str(e)) from None
    for spec in cfg.workers:
        if learning(spec) and "@" not in spec and "directory" not in cfg.models.get(spec, {}):
            cfg.models.setdefault(spec, {})["directory"] = str(state.learner_dir(spec))
    try:
        loaded = load_backends([*cfg.workers, cfg.judge], task, cfg.models,
                               lambda m: echo_note(m, quiet))
    except (BackendError, ModelError, ValueError) as e:
        raise fail(str(e)) from None
    wrapped = [CachedBackend(b, store) if store is not None and b.cacheable else b for b in loaded]
    cascade = AdaptiveCascade(task, wrapped[:-1], wrapped[-1], state, batch_size=cfg.batch_size)
    todo = [(p, items[j]) for p, j in enumerate(perm) if items[j].id not in results]
    saved = [0]

    def write(record: Any) -> None:
        results.write(record)
        saved[0] += 1

    try:
        run_with_progress(cascade.run(todo, len(items) - len(todo)), len(todo), cascade.stats,
                          write, quiet)
    except KeyboardInterrupt as e:
        raise stopped(e, saved[0], output) from None
    finally:
        cascade.close()
    done = [r for r in results.done.values() if r.id in positions]
    data = report(state, done, positions)
    path = write_report(data, output.with_name(output.name + ".adaptive.json"))
    typer.secho(f"certified: {statement(state)}", err=True, fg=typer.colors.GREEN
                if state.certified_looks else typer.colors.YELLOW)
    rate = data["judge_call_rate"]
    echo_note(f"judge calls {'-' if rate is None else f'{rate:.1%}'} of {data['items']} items; "
              f"per window, looks and the audit in {path}", quiet)
    return cascade.stats
