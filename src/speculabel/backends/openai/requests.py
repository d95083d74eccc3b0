"""Request bodies for the OpenAI-compatible endpoints, one builder per way of reading a vote.

``prompt="chat"`` sends the task's chat messages to ``/chat/completions``; ``"completion"`` sends
the task's completion prompt to ``/completions``.  ``extra`` (the backend's ``extra_body``) is
merged last, so a user can add endpoint-specific keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speculabel.backends.openai.parse import gbnf_string
from speculabel.tasks import Task

Request = tuple[str, dict[str, Any]]  # (path, body)


@dataclass(frozen=True)
class Bodies:
    model: str
    prompt: str  # "chat" or "completion"
    top_logprobs: int
    max_text_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    def _base(self, task: Task, fields: dict[str, str], *, suffix: str = "") -> Request:
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0}
        if self.prompt == "chat":
            body["messages"] = task.chat_messages(fields)
            return "/chat/completions", body
        body["prompt"] = task.completion_prompt(fields) + suffix
        return "/completions", body

    def _done(self, req: Request) -> Request:
        req[1].update(self.extra)
        return req

    def logprobs(self, task: Task, fields: dict[str, str]) -> Request:
        """The first answer token with the top-K log-probabilities."""
        path, body = self._base(task, fields)
        body["max_tokens"] = 1
        if self.prompt == "chat":
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        else:
            body["logprobs"] = self.top_logprobs
        return self._done((path, body))

    def continuation(self, task: Task, fields: dict[str, str], answer: str) -> Request:
        """Completion mode: the prompt plus one answer, echoed with its log-probabilities."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": task.completion_prompt(fields) + " " + answer,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": 1,
            "echo": True,
        }
        return self._done(("/completions", body))

    def choice(self, task: Task, fields: dict[str, str], fmt: str, with_logprobs: bool) -> Request:
        """Constrained decoding to exactly one answer text (``fmt``: how the endpoint takes it)."""
        answers = [lab.answer for lab in task.labels]
        path, body = self._base(task, fields, suffix=" ")
        if fmt == "grammar":
            body["grammar"] = "root ::= " + " | ".join(gbnf_string(a) for a in answers)
        elif fmt == "structured_outputs":
            body["structured_outputs"] = {"choice": answers}
        elif fmt == "guided_choice":
            body["guided_choice"] = answers
        else:
            schema = {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": answers}},
                "required": ["label"],
                "additionalProperties": False,
            }
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "label", "schema": schema, "strict": True},
            }
        body["max_tokens"] = max(8, max(len(a) for a in answers) + (16 if fmt == "json_schema" else 2))
        if with_logprobs and fmt != "json_schema":
            body["logprobs"] = True if self.prompt == "chat" else 1
        return self._done((path, body))

    def text(self, task: Task, fields: dict[str, str]) -> Request:
        """Free text, at most ``max_text_tokens`` (completion mode stops at a newline)."""
        path, body = self._base(task, fields)
        body["max_tokens"] = self.max_text_tokens
        if self.prompt != "chat":
            body["stop"] = ["\n"]
        return self._done((path, body))
