"""``speculabel tasks``: the built-in tasks, or one task's labels, fields and prompt."""

from __future__ import annotations

from typing import Annotated

import typer

from speculabel.cli.common import fail


def tasks_cmd(
    show: Annotated[str | None, typer.Argument(help="A task name or TOML file to print in full.")] = None,
) -> None:
    """List the built-in tasks, or show one task's labels, fields and prompt."""
    from speculabel.tasks import BUILTIN_TASKS, TaskError, load_task

    if show is None:
        for t in BUILTIN_TASKS.values():
            typer.echo(f"{t.name:16s} labels: {', '.join(t.label_names)}   fields: {', '.join(t.fields)}")
        return
    try:
        t = load_task(show)
    except TaskError as e:
        raise fail(str(e)) from None
    typer.echo(f"task {t.name}\nlabels: {', '.join(t.label_names)}\nfields: {', '.join(t.fields)}\n")
    typer.echo(t.completion_prompt({f: f"<{f}>" for f in t.fields}))


def register(app: typer.Typer) -> None:
    app.command("tasks")(tasks_cmd)
