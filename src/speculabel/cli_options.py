"""Options that classify, bench and calibrate share: one flag, one meaning, one help text."""

from __future__ import annotations

from typing import Annotated

import typer

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
