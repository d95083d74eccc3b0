"""The command line: one module per command, registered on one Typer app.

No command imports a model library until it runs, so ``speculabel --help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from speculabel.cli.common import EXIT_INTERRUPTED

app = typer.Typer(
    name="speculabel",
    help=(
        "Cheap LLM text classification. Small worker models label each item; when the "
        "acceptance rule accepts their vote it is final, otherwise a large judge model decides."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register() -> None:
    from speculabel.cli import bench, calibrate, classify, demo, models, tasks

    for module in (classify, demo, tasks, models, bench, calibrate):
        module.register(app)


_register()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; finished items are saved, rerun the same command to resume",
                   err=True)
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["app", "main"]
