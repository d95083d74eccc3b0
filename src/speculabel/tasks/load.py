"""Tasks by name or from a TOML file (format: README, "Custom tasks").

Many-label tasks need not list their labels inline: ``labels_from = "categories.json"`` (a
JSON list of names or of ``{name, description, text}`` tables) or ``"intents.txt"`` (one name a
line), relative to the TOML file; or the caller gives them (``labels=``: e.g. the distinct
values of a column of the calibration data, ``speculabel calibrate --labels-from-column``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speculabel.tasks.builtin import BUILTIN_TASKS
from speculabel.tasks.task import Example, Label, Task, TaskError


def with_labels(task: Task, names: Sequence[str]) -> Task:
    """``task`` with these label names instead (e.g. the distinct values of a column)."""
    from dataclasses import replace

    return replace(task, labels=tuple(Label(str(n)) for n in names), examples=())


def load_task(name_or_path: str | Path, labels: Sequence[str] | None = None) -> Task:
    """A built-in task by name, or a custom task from a TOML file (``labels``: the label names
    of a TOML task that has neither ``labels`` nor ``labels_from``)."""
    key = str(name_or_path)
    if key in BUILTIN_TASKS:
        return BUILTIN_TASKS[key]
    path = Path(key)
    if not path.exists():
        raise TaskError(
            f"unknown task {key!r}: not a built-in task ({', '.join(BUILTIN_TASKS)}) "
            "and no such TOML file"
        )
    return task_from_toml(path, labels)


def task_from_toml(path: Path, labels: Sequence[str] | None = None) -> Task:
    """Read a task file. Format: see README ("Custom tasks").  ``labels``: the label names when
    the file has neither ``labels`` nor ``labels_from``."""
    src = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{src}: not valid TOML: {e}") from e
    return task_from_dict(data, source=src, base=path.parent, label_names=labels)


def read_labels_file(path: Path, source: str) -> list[Any]:
    """Labels from a file: JSON (a list of names or tables) or text (one name a line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaskError(f"{source}: labels_from: cannot read {path}: {e.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaskError(f"{source}: labels_from: {path} is not valid JSON: {e}") from None
        if not isinstance(raw, list):
            raise TaskError(f"{source}: labels_from: {path} must hold a JSON list of labels")
        return raw
    return [line.strip() for line in text.splitlines() if line.strip()]


def task_from_dict(data: dict[str, Any], source: str = "task", base: Path | None = None,
                   label_names: Sequence[str] | None = None) -> Task:
    """A task from a TOML table; ``labels_from`` is read relative to ``base``."""
    for key in ("name", "instructions", "fields"):
        if key not in data:
            raise TaskError(f"{source}: missing required key {key!r}")
    if "labels" in data and "labels_from" in data:
        raise TaskError(f"{source}: give 'labels' or 'labels_from', not both")
    if "labels" in data:
        raw_labels = data["labels"]
    elif "labels_from" in data:
        if not isinstance(data["labels_from"], str):
            raise TaskError(f"{source}: 'labels_from' must be a file name")
        where = Path(data["labels_from"])
        raw_labels = read_labels_file(where if where.is_absolute() or base is None
                                      else base / where, source)
    elif label_names is not None:
        raw_labels = [str(lab) for lab in label_names]
    else:
        raise TaskError(f"{source}: missing required key 'labels' (or 'labels_from', or labels "
                        "from a column: --labels-from-column)")
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


def task_toml(task: Task) -> str:
    """``task`` as a task TOML (what :func:`task_from_toml` reads back)."""
    def q(v: str) -> str:
        return json.dumps(v, ensure_ascii=False)

    lines = [f"name = {q(task.name)}", f"instructions = {q(task.instructions)}",
             f"fields = [{', '.join(q(f) for f in task.fields)}]",
             f"input_template = {q(task.input_template)}", f"answer_cue = {q(task.answer_cue)}",
             "labels = ["]
    lines += [f"  {{ name = {q(lab.name)}, description = {q(lab.description)}"
              + (f", text = {q(lab.text)}" if lab.text else "") + " }," for lab in task.labels]
    lines.append("]")
    for ex in task.examples:
        lines.append("[[examples]]")
        lines += [f"{k} = {q(v)}" for k, v in ex.fields.items()]
        lines.append(f"label = {q(ex.label)}")
    return "\n".join(lines) + "\n"
