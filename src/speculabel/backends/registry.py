"""Model specs to backends: one registry of named kinds, each imported only when used.

Spec forms:
  ``smollm2-135m`` (catalogue name), ``gguf:PATH`` -> in-process llama.cpp
  ``openai:MODEL@BASE_URL``                      -> OpenAI-compatible HTTP endpoint
  ``vader``                                      -> VADER sentiment lexicon
  ``learner:minilm``                             -> MiniLM + logistic regression trained on the judge
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from speculabel.backends.base import Backend, BackendError

# kind -> "module:factory"; a factory takes (spec, **options) and returns a Backend
_KINDS: dict[str, str] = {
    "llamacpp": "speculabel.backends.llamacpp:from_spec",
    "openai": "speculabel.backends.openai_http:from_spec",
    "vader": "speculabel.backends.lexicon:from_spec",
    "learner": "speculabel.backends.learner:from_spec",
}


def available_kinds() -> list[str]:
    return sorted(_KINDS)


def kind_of(spec: str) -> str:
    from speculabel.models import CATALOGUE

    if spec in CATALOGUE or spec.startswith("gguf:"):
        return "llamacpp"
    if spec.startswith("openai:"):
        return "openai"
    if spec == "vader" or spec.startswith("vader:"):
        return "vader"
    if spec.startswith("learner:"):
        return "learner"
    known = ", ".join(sorted(CATALOGUE))
    raise BackendError(
        f"unknown model {spec!r}. Known: {known}; or gguf:PATH, openai:MODEL@BASE_URL, "
        "vader, learner:minilm"
    )


def load_backend(spec: str, **options: Any) -> Backend:
    """Build the backend a spec names; options go to that kind's factory."""
    kind = kind_of(spec)
    module_name, factory_name = _KINDS[kind].split(":")
    module = importlib.import_module(module_name)
    factory: Callable[..., Backend] = getattr(module, factory_name)
    return factory(spec, **options)
