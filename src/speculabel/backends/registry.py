"""Model specs to backends: one registry of named kinds, each imported only when used.

Spec forms:
  ``smollm2-135m`` (catalogue name), ``gguf:PATH`` -> in-process llama.cpp
  ``openai:MODEL@BASE_URL``                      -> OpenAI-compatible HTTP endpoint
  ``vader``                                      -> VADER sentiment lexicon
  ``learner:minilm``                             -> MiniLM + logistic regression, learns from labels
"""

from __future__ import annotations

import importlib
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.tasks import Task

# kind -> "module:Class"; each class has ``from_spec(spec, **options)`` and ``check_spec``
_KINDS: dict[str, str] = {
    "llamacpp": "speculabel.backends.llamacpp.backend:LlamaCppBackend",
    "openai": "speculabel.backends.openai.backend:OpenAIBackend",
    "vader": "speculabel.backends.lexicon:VaderBackend",
    "learner": "speculabel.backends.learner.backend:LearnerBackend",
    "similarity": "speculabel.backends.learner.similarity:SimilarityBackend",
}


def available_kinds() -> list[str]:
    return sorted(_KINDS)


def kind_of(spec: str) -> str:
    """The kind a spec names; :class:`BackendError` naming the accepted forms otherwise."""
    from speculabel.models import CATALOGUE

    if spec in CATALOGUE or spec.startswith("gguf:"):
        return "llamacpp"
    head = spec.partition(":")[0]
    if head in ("openai", "learner", "similarity") and ":" in spec:
        return head
    if spec == "vader":
        return "vader"
    known = ", ".join(sorted(CATALOGUE))
    raise BackendError(
        f"unknown model {_safe(spec)!r}. Known: {known}; or gguf:PATH, openai:MODEL@BASE_URL, "
        "vader, learner:minilm, similarity:minilm"
    )


def backend_class(spec: str) -> type[Backend]:
    module_name, class_name = _KINDS[kind_of(spec)].split(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls


def check_spec(spec: str, task: Task, **options: Any) -> None:
    """Can this spec, with these options, score ``task``?  No model is loaded."""
    backend_class(spec).check_spec(spec, dict(options), task)


def load_backend(spec: str, **options: Any) -> Backend:
    """Build the backend a spec names; options go to that kind's ``from_spec``."""
    cls = backend_class(spec)
    factory = getattr(cls, "from_spec", None)
    backend: Backend = factory(spec, **options) if factory is not None else cls(spec, **options)  # type: ignore[call-arg]
    return backend


def _safe(spec: str) -> str:
    """A spec fit for a message: credentials inside a URL (``user:key@host``) are hidden."""
    from speculabel.redact import redact

    return redact(spec)
