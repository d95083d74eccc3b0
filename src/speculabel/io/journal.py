"""The results journal read and rewritten as a stream: a line at a time, so that resuming a
run of a million records holds one record, not the file (:mod:`speculabel.io.results`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from speculabel.io.runmeta import ResultsError, fsync_dir


def blank(path: Path) -> bool:
    """No file, or nothing but whitespace in it (read in blocks)."""
    if not path.exists():
        return True
    with path.open("rb") as fh:
        while block := fh.read(1 << 16):
            if block.strip():
                return False
    return True


def cut_torn_line(path: Path) -> None:
    """Cut a last line without its newline (a write cut short): read backwards in blocks."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        pos, cut = size, 0
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            i = fh.read(step).rfind(b"\n")
            if i >= 0:
                cut = pos + i + 1
                break
        fh.truncate(cut)


def journal_lines(path: Path) -> Iterator[tuple[int, bytes, Any]]:
    """``(line index, line, JSON value)`` of every line, the value None for a blank line;
    :class:`ResultsError` naming the line for one that is not JSON."""
    with path.open("rb") as fh:
        for i, raw in enumerate(fh):
            if not raw.strip():
                yield i, raw, None
                continue
            try:
                yield i, raw, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ResultsError(f"{path}: line {i + 1} is not a speculabel record ({e}); the "
                                   "file was left untouched") from e


def rewrite_journal(path: Path, keep: Callable[[int, Any], bool]) -> None:
    """``path`` with only the lines ``keep(index, value)`` accepts, streamed into a temporary
    file that replaces it (fsynced before the rename, the folder after): the old file or the new
    one, never a mix.  OSError when it cannot be written (``path`` is then as it was)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            for i, raw, obj in journal_lines(path):
                if keep(i, obj):
                    out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
