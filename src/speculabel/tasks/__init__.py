"""Tasks: a label set, input fields, a prompt and few-shot examples (built in, or from TOML)."""

from speculabel.tasks.builtin import BUILTIN_TASKS, SENTIMENT, SIMILAR_TICKET
from speculabel.tasks.load import load_task, task_from_dict, task_from_toml, with_labels
from speculabel.tasks.task import Example, Label, Task, TaskError

__all__ = [
    "BUILTIN_TASKS",
    "SENTIMENT",
    "SIMILAR_TICKET",
    "Example",
    "Label",
    "Task",
    "TaskError",
    "load_task",
    "task_from_dict",
    "task_from_toml",
    "with_labels",
]
