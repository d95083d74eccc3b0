"""Tasks: a label set, input fields, a prompt and few-shot examples.

The prompt is split in two on purpose: everything that does not depend on the item (instructions,
label list, examples) forms a shared prefix that a backend evaluates once; only the rendered item
and the answer cue change per input.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from speculabel.errors import SpeculabelError


class TaskError(SpeculabelError, ValueError):
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
#: a task of at least this many labels is a many-label task (intent routing): the learner's
#: candidate fit shares and its ``gate=auto`` follow it
MANY_LABELS = 10


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
