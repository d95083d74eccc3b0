"""What the commands share: one flag, one meaning, one help text; errors as one red line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from speculabel.tasks import Task

#: exit statuses every command uses
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3  # some items pending (judge unavailable): rerun to finish them
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): what was decided is saved; rerun to resume
EXIT_TERMINATED = 143  # SIGTERM: the same clean stop
EXIT_BROKEN_PIPE = 141  # stdout closed early (``speculabel tasks x | head -1``): nothing is wrong

TextOpt = Annotated[
    str | None, typer.Option("--text-column", help="Column with the text (single-text tasks).")
]
TextAOpt = Annotated[
    str | None, typer.Option("--text-a-column", help="Column with the first text (pair tasks).")
]
TextBOpt = Annotated[
    str | None, typer.Option("--text-b-column", help="Column with the second text (pair tasks).")
]
IdOpt = Annotated[
    str | None, typer.Option("--id-column", help="Column with item ids (default: row number).")
]
VotesOpt = Annotated[
    Path | None,
    typer.Option(
        "--votes",
        help="Vote store: a votes.sqlite file, or a folder holding one (a bench --out) "
        "[default: $SPECULABEL_HOME/votes.sqlite].",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")]
DelimiterOpt = Annotated[
    str | None,
    typer.Option("--delimiter", help="CSV/TSV field separator: one character, or 'tab' "
                                     "[default: ',' for .csv, tab for .tsv]."),
]


def fail(msg: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: msg`` (secrets redacted) and return the exit to raise."""
    from speculabel.redact import redact

    typer.secho(f"error: {redact(msg)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def csv_list(value: str | None, flag: str) -> list[str] | None:
    """A comma-separated flag value as a list; ``None`` when not given; an error when it names
    nothing (``--workers ","`` must not mean "the defaults")."""
    if value is None:
        return None
    out = [v.strip() for v in value.split(",") if v.strip()]
    if not out:
        raise fail(f"{flag} {value!r} names nothing; give comma-separated model specs")
    return out


def column_map(
    task: Task, text: str | None, text_a: str | None, text_b: str | None
) -> dict[str, str]:
    """Which column holds each of the task's fields (flags that do not fit the task refused)."""
    pair = len(task.fields) == 2 and set(task.fields) == {"text_a", "text_b"}
    columns: dict[str, str] = {}
    if text:
        if len(task.fields) != 1:
            hint = " (use --text-a-column and --text-b-column)" if pair else ""
            raise fail(f"task {task.name!r} has fields {list(task.fields)}: --text-column is for "
                       f"single-text tasks{hint}")
        columns[task.fields[0]] = text
    for field, col, flag in (("text_a", text_a, "--text-a-column"),
                             ("text_b", text_b, "--text-b-column")):
        if col:
            if field not in task.fields:
                raise fail(f"task {task.name!r} has fields {list(task.fields)}: {flag} is for "
                           "pair tasks (use --text-column)")
            columns[field] = col
    return columns


def echo_note(msg: str, quiet: bool = False) -> None:
    if not quiet:
        typer.echo(msg, err=True)


def console(stderr: bool = False) -> Any:
    """A rich console that prints whole tables when the output is a pipe or a log file (rich
    would cut them to 80 columns there)."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, width=None if tty else 1000)


def stopped(exc: BaseException, saved: int, output: Path | str) -> typer.Exit:
    """Say what a Ctrl-C or SIGTERM left behind and how to go on; return the exit to raise
    (130 for Ctrl-C, 143 for SIGTERM)."""
    from speculabel.interrupt import Interrupted

    status = exc.exit_status if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    what = "stopped by SIGTERM" if status == EXIT_TERMINATED else "interrupted"
    records = "1 record" if saved == 1 else f"{saved} records"
    typer.echo(f"{what}: {records} written in this run are saved in {output}; rerun the same "
               "command to resume", err=True)
    return typer.Exit(status)


def print_summary(summary: dict[str, Any], output: Path | None = None) -> None:
    from rich.table import Table

    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    if output is not None:
        table.add_row("results", str(output))
    console(stderr=True).print(table)


def progress_bar(title: str) -> Any:
    """The classify progress bar (items, items/s and judge-call rate, elapsed, eta), not started."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), transient=False, refresh_per_second=4,
    )


def rate_text(stats: Any, seconds: float) -> str:
    """What the bar shows beside the count: items per second and the judge-call rate so far."""
    return f"{stats.items / max(seconds, 1e-9):.2f} items/s  judge {100 * stats.judge_rate:.0f}%"


def run_with_progress(records: Any, total: int, stats: Any, write: Any, quiet: bool) -> None:
    """Write each record as it comes, with a progress bar (items/s, judge-call rate) unless
    ``quiet``.  A Ctrl-C or SIGTERM never cuts a write in two (see :mod:`speculabel.interrupt`):
    it stops the run after the record in hand."""
    import time

    from speculabel.interrupt import deferred

    if quiet:
        for rec in records:
            with deferred():
                write(rec)
        return
    t0 = time.perf_counter()
    with progress_bar("classify") as bar:
        tid = bar.add_task("classify", total=total, rate="")
        for rec in records:
            with deferred():
                write(rec)
            bar.update(tid, advance=1, rate=rate_text(stats, time.perf_counter() - t0))


def exit_if_pending(pending: int) -> None:
    """Exit status 3, saying how to finish, when items were left pending (judge unavailable)."""
    if pending:
        typer.secho(f"{pending} items are not decided (judge unavailable); run the same command "
                    "again to finish them.", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INCOMPLETE)
