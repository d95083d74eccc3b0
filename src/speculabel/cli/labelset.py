"""Labels of a many-label task taken from a column of the calibration table, and the task
written beside the config so that ``classify --config`` runs it with the same labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def labels_from(source: str, column: str) -> list[str]:
    """The distinct non-empty values of ``column`` in the table ``source``, sorted."""
    from speculabel.io.tables import InputError, table_rows

    path = Path(source)
    if not path.is_file():
        raise InputError(f"--labels-from-column needs a table; {source} is not a file")
    names, rows = table_rows(path)
    if column not in names:
        raise InputError(f"{source}: no column {column!r} (--labels-from-column); columns: "
                         f"{', '.join(names)}")
    values = {str(v[column]).strip() for _, v in rows
              if v.get(column) is not None and str(v[column]).strip()}
    if len(values) < 2:
        raise InputError(f"{source}: column {column!r} holds {len(values)} distinct label(s); "
                         "a task needs at least two")
    return sorted(values)


def same_task(spec: str, task: Any) -> bool:
    """Does the task file ``spec`` load as ``task`` by itself (no labels given from outside)?"""
    from speculabel.tasks import TaskError, task_from_toml

    try:
        return Path(spec).is_file() and task_from_toml(Path(spec)) == task
    except TaskError:
        return False


def write_task(task: Any, output: Path) -> str:
    """Write ``task`` beside the config (``STEM.task.toml``); its absolute path for the config."""
    from speculabel.tasks.load import task_toml

    path = output.with_name(f"{output.stem}.task.toml")
    path.write_text(task_toml(task), encoding="utf-8")
    return str(path.resolve())
