"""The benches that take ``--input SOURCE:N`` (adaptive, buying): parse each, run it, and write
the JSON after every input so that a long bench stopped half-way keeps what it finished."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Say = Callable[[str], None]


def split_input(spec: str) -> tuple[str, int]:
    """``tweets:test:1000`` -> (``tweets:test``, 1000); ValueError naming the flag otherwise."""
    source, _, n = spec.rpartition(":")
    if not source or not n.isdigit():
        raise ValueError(f"--input {spec!r}: expected SOURCE:N, e.g. tweets:test:1000")
    return source, int(n)


def run_inputs(specs: Sequence[str], run: Callable[[str, int, Say], list[dict[str, Any]]],
               out: Path, *, quiet: bool = False) -> list[dict[str, Any]]:
    """``run(source, n, say)`` for every input (all parsed first: a bad one fails at once),
    the rows so far written to ``out`` after each."""
    parsed = [split_input(s) for s in specs]
    say: Say = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    rows: list[dict[str, Any]] = []
    for source, n in parsed:
        rows += run(source, n, say)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
    return rows
