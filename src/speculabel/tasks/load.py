"""Tasks by name or from a TOML file (format: README, "Custom tasks")."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from speculabel.tasks.builtin import BUILTIN_TASKS
from speculabel.tasks.task import Example, Label, Task, TaskError


def load_task(name_or_path: str | Path) -> Task:
    """A built-in task by name, or a custom task from a TOML file."""
    key = str(name_or_path)
    if key in BUILTIN_TASKS:
        return BUILTIN_TASKS[key]
    path = Path(key)
    if not path.exists():
        raise TaskError(
            f"unknown task {key!r}: not a built-in task ({', '.join(BUILTIN_TASKS)}) "
            "and no such TOML file"
        )
    return task_from_toml(path)


def task_from_toml(path: Path) -> Task:
    """Read a task file. Format: see README ("Custom tasks")."""
    src = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{src}: not valid TOML: {e}") from e
    return task_from_dict(data, source=src)


def task_from_dict(data: dict[str, Any], source: str = "task") -> Task:
    for key in ("name", "instructions", "labels", "fields"):
        if key not in data:
            raise TaskError(f"{source}: missing required key {key!r}")
    raw_labels = data["labels"]
    if not isinstance(raw_labels, list):
        raise TaskError(f"{source}: 'labels' must be a list of tables or strings")
    labels: list[Label] = []
    for i, lab in enumerate(raw_labels, 1):
        if isinstance(lab, str):
            labels.append(Label(lab))
        elif isinstance(lab, dict) and "name" in lab:
            labels.append(
                Label(str(lab["name"]), str(lab.get("description", "")), str(lab.get("text", "")))
            )
        else:
            raise TaskError(f"{source}: label {i} needs a 'name'")
    fields = data["fields"]
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise TaskError(f"{source}: 'fields' must be a list of field names")
    template = data.get("input_template") or "\n".join(
        f"{f.replace('_', ' ').capitalize()}: {{{f}}}" for f in fields
    )
    examples: list[Example] = []
    for i, ex in enumerate(data.get("examples", []), 1):
        if not isinstance(ex, dict) or "label" not in ex:
            raise TaskError(f"{source}: example {i} needs a 'label'")
        examples.append(
            Example({f: str(ex.get(f, "")) for f in fields}, str(ex["label"]))
        )
    task_fields = tuple(fields)
    try:
        return Task(
            name=str(data["name"]),
            labels=tuple(labels),
            fields=task_fields,
            instructions=str(data["instructions"]),
            input_template=str(template),
            answer_cue=str(data.get("answer_cue", "Answer:")),
            examples=tuple(examples),
        )
    except TaskError as e:
        raise TaskError(str(e).replace(f"task {data['name']!r}", source)) from None
