"""The command line: one module per command, registered on one Typer app.

No command imports a model library until it runs, so ``speculabel --help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from speculabel.cli.common import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED, fail
from speculabel.errors import PendingError, SpeculabelError

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
    from speculabel.cli import bench, calibrate, classify, demo, models, serve, tasks

    for module in (classify, demo, tasks, models, bench, calibrate, serve):
        module.register(app)


_register()


def main() -> None:
    """The ``speculabel`` command: a :class:`SpeculabelError` that no command turned into its
    own message still ends as one line on stderr and exit status 2 (3 for items left pending),
    never a traceback."""
    try:
        app()
    except SpeculabelError as e:
        code = EXIT_INCOMPLETE if isinstance(e, PendingError) else EXIT_BAD_INPUT
        fail(one_line(e))
        sys.exit(code)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished items are saved, rerun the same command to resume",
                   err=True)
        sys.exit(EXIT_INTERRUPTED)


def one_line(e: BaseException) -> str:
    """An error's message on one line (a multi-line message is joined with "; ")."""
    text = "; ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return text or type(e).__name__


__all__ = ["app", "main"]
