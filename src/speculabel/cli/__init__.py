"""The command line: one module per command, registered on one Typer app.

No command imports a model library until it runs, so ``speculabel --help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from speculabel.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    fail,
)
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
    from speculabel.cli import bench, calibrate, classify, demo, match, models, serve, tasks

    for module in (classify, match, demo, tasks, models, bench, calibrate, serve):
        module.register(app)


_register()


def _stdout_closed() -> bool:
    """Was stdout closed by its reader (``| head -1``)?  Click then swaps in a wrapper that
    swallows the failed flush and exits 1; a closed pipe is no error of ours."""
    return type(sys.stdout).__name__ == "PacifyFlushWrapper"


def main() -> None:
    """The ``speculabel`` command: a :class:`SpeculabelError` that no command turned into its
    own message still ends as one line on stderr and exit status 2 (3 for items left pending),
    never a traceback; Ctrl-C and SIGTERM stop cleanly (see :mod:`speculabel.interrupt`), and a
    reader that stops reading (``| head``) ends the command quietly."""
    from speculabel.interrupt import Interrupted, stop_on_signals

    try:
        with stop_on_signals():
            app()
    except SpeculabelError as e:
        code = EXIT_INCOMPLETE if isinstance(e, PendingError) else EXIT_BAD_INPUT
        fail(one_line(e))
        sys.exit(code)
    except KeyboardInterrupt as e:
        status = e.exit_status if isinstance(e, Interrupted) else EXIT_INTERRUPTED
        what = "interrupted" if status == EXIT_INTERRUPTED else "stopped by SIGTERM"
        typer.echo(f"{what}; finished items are saved, rerun the same command to resume",
                   err=True)
        sys.exit(status)
    except BrokenPipeError:
        _quiet_exit()
    except SystemExit as e:
        if e.code not in (0, None) and _stdout_closed():
            _quiet_exit()
        raise


def _quiet_exit() -> None:
    """Exit 141 (as a shell reports SIGPIPE) without a second failed flush at shutdown."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.exit(EXIT_BROKEN_PIPE)


def one_line(e: BaseException) -> str:
    """An error's message on one line (a multi-line message is joined with "; ")."""
    text = "; ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return text or type(e).__name__


__all__ = ["app", "main"]
