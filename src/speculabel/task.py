"""Tasks: a label set, input fields, a prompt and few-shot examples.

The prompt is split in two on purpose: everything that does not depend on the item (instructions,
label list, examples) forms a shared prefix that a backend evaluates once; only the rendered item
and the answer cue change per input.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TaskError(ValueError):
    """A task definition is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""
    text: str = ""  # what the model is asked to say; defaults to the name with spaces

    @property
    def answer(self) -> str:
        return self.text or self.name.replace("_", " ")


@dataclass(frozen=True)
class Example:
    fields: dict[str, str]
    label: str


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[Label, ...]
    fields: tuple[str, ...]
    instructions: str
    input_template: str
    answer_cue: str = "Answer:"
    examples: tuple[Example, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _validate(self, source=f"task {self.name!r}")

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def label(self, name: str) -> Label:
        for lab in self.labels:
            if lab.name == name:
                return lab
        raise KeyError(name)

    def render_input(self, fields: dict[str, str]) -> str:
        return self.input_template.format(**{f: fields[f] for f in self.fields})

    def system_text(self) -> str:
        """Instructions plus the label list, used as the system prompt for chat models."""
        lines = [self.instructions.strip(), "", "Answer with exactly one of these labels:"]
        for lab in self.labels:
            desc = f": {lab.description}" if lab.description else ""
            lines.append(f"- {lab.answer}{desc}")
        return "\n".join(lines)

    def chat_messages(self, fields: dict[str, str]) -> list[dict[str, str]]:
        """Few-shot chat: each example is a user turn and an assistant answer."""
        msgs = [{"role": "system", "content": self.system_text()}]
        for ex in self.examples:
            msgs.append({"role": "user", "content": self.render_input(ex.fields)})
            msgs.append({"role": "assistant", "content": self.label(ex.label).answer})
        msgs.append({"role": "user", "content": self.render_input(fields)})
        return msgs

    def completion_prompt(self, fields: dict[str, str]) -> str:
        """Plain-text few-shot prompt for base models; the label follows the answer cue."""
        parts = [self.system_text(), ""]
        for ex in self.examples:
            parts.append(f"{self.render_input(ex.fields)}\n{self.answer_cue} {self.label(ex.label).answer}\n")
        parts.append(f"{self.render_input(fields)}\n{self.answer_cue}")
        return "\n".join(parts)

    def fingerprint(self) -> str:
        """Hash of everything that changes what a model is asked: keys the vote store."""
        blob = json.dumps(
            {
                "labels": [(lab.name, lab.description, lab.answer) for lab in self.labels],
                "fields": self.fields,
                "instructions": self.instructions,
                "template": self.input_template,
                "cue": self.answer_cue,
                "examples": [(sorted(e.fields.items()), e.label) for e in self.examples],
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_FIELD_RE = re.compile(r"{(\w+)}")


def _validate(task: Task, source: str) -> None:
    if not task.name:
        raise TaskError(f"{source}: missing 'name'")
    names = [lab.name for lab in task.labels]
    if len(names) < 2:
        raise TaskError(f"{source}: a task needs at least two labels, got {len(names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TaskError(f"{source}: duplicate label(s): {', '.join(dupes)}")
    answers = [lab.answer for lab in task.labels]
    if len(set(answers)) != len(answers):
        raise TaskError(f"{source}: two labels have the same answer text: {answers}")
    for lab in task.labels:
        if not lab.name.strip():
            raise TaskError(f"{source}: a label has an empty name")
    if not task.fields:
        raise TaskError(f"{source}: missing 'fields' (the input field names, e.g. ['text'])")
    used = set(_FIELD_RE.findall(task.input_template))
    missing = [f for f in task.fields if f not in used]
    if missing:
        raise TaskError(f"{source}: input_template does not use field(s) {missing}")
    unknown = sorted(used - set(task.fields))
    if unknown:
        raise TaskError(f"{source}: input_template names unknown field(s) {unknown}")
    for i, ex in enumerate(task.examples, 1):
        if ex.label not in names:
            raise TaskError(
                f"{source}: example {i} has unknown label {ex.label!r} (labels: {', '.join(names)})"
            )
        lacking = [f for f in task.fields if not str(ex.fields.get(f, "")).strip()]
        if lacking:
            raise TaskError(f"{source}: example {i} lacks field(s) {lacking}")


# ---------------------------------------------------------------- built-in tasks

SENTIMENT = Task(
    name="sentiment",
    labels=(
        Label("negative", "the author expresses a bad feeling, complaint or criticism"),
        Label("neutral", "a fact, question or mixed message with no clear feeling"),
        Label("positive", "the author expresses a good feeling, praise or enjoyment"),
    ),
    fields=("text",),
    instructions="Classify the sentiment of the message.",
    input_template="Message: {text}",
    answer_cue="Sentiment:",
    examples=(
        Example({"text": "I waited two hours and the food was cold. Never again."}, "negative"),
        Example({"text": "The store opens at 9am on Saturdays."}, "neutral"),
        Example({"text": "Best concert of my life, the band was amazing!"}, "positive"),
        Example({"text": "My phone died again, this battery is useless."}, "negative"),
    ),
)

SIMILAR_TICKET = Task(
    name="similar-ticket",
    labels=(
        Label("similar", "both tickets are about the same underlying issue", text="yes"),
        Label("not_similar", "the tickets are about different issues", text="no"),
    ),
    fields=("text_a", "text_b"),
    instructions=(
        "You triage customer support tickets. Decide whether two tickets are about the same "
        "issue, so that one answer would resolve both."
    ),
    input_template="Ticket A: {text_a}\nTicket B: {text_b}\nSame issue?",
    answer_cue="Answer:",
    examples=(
        Example(
            {"text_a": "My card still hasn't arrived after two weeks.",
             "text_b": "When will my new card be delivered? It's been ages."},
            "similar",
        ),
        Example(
            {"text_a": "I was charged twice for the same purchase.",
             "text_b": "How do I change my PIN?"},
            "not_similar",
        ),
        Example(
            {"text_a": "Why was my transfer declined?",
             "text_b": "My transfer didn't go through, it says declined."},
            "similar",
        ),
        Example(
            {"text_a": "My card has not arrived yet.",
             "text_b": "I want to activate the card I just received."},
            "not_similar",
        ),
    ),
)

BUILTIN_TASKS: dict[str, Task] = {t.name: t for t in (SENTIMENT, SIMILAR_TICKET)}


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
