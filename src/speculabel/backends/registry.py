"""Model specs to backends: one registry of named kinds, each imported only when used.

Spec forms:
  ``smollm2-135m`` (catalogue name), ``gguf:PATH`` -> in-process llama.cpp
  ``openai:MODEL@BASE_URL``                      -> OpenAI-compatible HTTP endpoint
  ``vader``                                      -> VADER sentiment lexicon
  ``learner:minilm``                             -> MiniLM + logistic regression, learns from labels
  ``learner:mpnet``                              -> the same on all-mpnet-base-v2 (extra embed-mpnet)
  ``KIND:...`` or ``KIND``                       -> a plugin's backend (below)

Plugins: another distribution adds a kind by an entry point in the group ``speculabel.backends``
whose name is the kind (the spec's prefix before ``:``) and whose value is a :class:`Backend`
subclass (built with its ``from_spec(spec, **options)`` when it has one, else ``cls(spec,
**options)``; its ``check_spec`` is used when present) or a factory ``f(spec, **options) ->
Backend``, as spacy-llm and RouteLLM allow::

    [project.entry-points."speculabel.backends"]
    mybackend = "mypackage.backend:MyBackend"

Entry points are looked up only when a spec names no built-in kind, and a plugin is imported only
when a spec names its kind, so importing speculabel runs no plugin code.  A built-in kind cannot be
overridden.  A plugin that fails to import or gives something else than a backend is a
:class:`BackendError` naming the plugin.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.errors import SpeculabelError
from speculabel.tasks import Task

ENTRY_POINT_GROUP = "speculabel.backends"

# kind -> "module:Class"; each class has ``from_spec(spec, **options)`` and ``check_spec``
_KINDS: dict[str, str] = {
    "llamacpp": "speculabel.backends.llamacpp.backend:LlamaCppBackend",
    "openai": "speculabel.backends.openai.backend:OpenAIBackend",
    "vader": "speculabel.backends.lexicon:VaderBackend",
    "learner": "speculabel.backends.learner.backend:LearnerBackend",
    "similarity": "speculabel.backends.learner.similarity:SimilarityBackend",
}


def available_kinds() -> list[str]:
    """The built-in kinds and those that installed plugins add."""
    return sorted({*_KINDS, *plugins()})


def _builtin_kind(spec: str) -> str | None:
    from speculabel.models import CATALOGUE

    if spec in CATALOGUE or spec.startswith("gguf:"):
        return "llamacpp"
    head = spec.partition(":")[0]
    if head in ("openai", "learner", "similarity") and ":" in spec:
        return head
    if spec == "vader":
        return "vader"
    return None


def kind_of(spec: str) -> str:
    """The kind a spec names; :class:`BackendError` naming the accepted forms otherwise."""
    from speculabel.models import CATALOGUE

    kind = _builtin_kind(spec)
    if kind is not None:
        return kind
    head = spec.partition(":")[0]
    found = plugins()
    if head in found and head not in _KINDS:
        return head
    known = ", ".join(sorted(CATALOGUE))
    extra = "".join(f", {name}:..." for name in sorted(found) if name not in _KINDS)
    raise BackendError(
        f"unknown model {_safe(spec)!r}. Known: {known}; or gguf:PATH, openai:MODEL@BASE_URL, "
        f"vader, learner:minilm|mpnet, similarity:minilm|mpnet{extra}"
    )


# ---------------------------------------------------------------------- plugins
def plugins() -> dict[str, EntryPoint]:
    """The entry points of the group ``speculabel.backends``, by kind (none is imported)."""
    return _plugins(tuple(sys.path))


@lru_cache(maxsize=4)
def _plugins(path: tuple[str, ...]) -> dict[str, EntryPoint]:
    """Looked up once per ``sys.path`` (a path added later is looked at again)."""
    del path  # the cache key only
    out: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in out and out[ep.name].value != ep.value:
            raise BackendError(f"two backend plugins claim the kind {ep.name!r}: "
                               f"{_where(out[ep.name])} and {_where(ep)}; uninstall one")
        out[ep.name] = ep
    return out


def _where(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"{ep.value!r}{name}"


def _load_plugin(kind: str) -> Any:
    """The object a plugin's entry point names: a Backend subclass or a factory."""
    ep = plugins()[kind]
    try:
        obj = ep.load()
    except Exception as e:  # any failure inside a third party's import is that plugin's fault
        raise BackendError(f"backend plugin {kind!r} ({_where(ep)}) cannot be loaded: "
                           f"{type(e).__name__}: {e}") from e
    if (isinstance(obj, type) and not issubclass(obj, Backend)) or not callable(obj):
        raise BackendError(f"backend plugin {kind!r} ({_where(ep)}) gives {obj!r}, not a Backend "
                           "subclass or a factory of backends")
    return obj


# ---------------------------------------------------------------------- building
def _target(spec: str) -> tuple[str, Any]:
    """(kind, what builds it): a built-in Backend class, or a plugin's class or factory."""
    kind = kind_of(spec)
    if kind in _KINDS:
        module_name, class_name = _KINDS[kind].split(":")
        return kind, getattr(importlib.import_module(module_name), class_name)
    return kind, _load_plugin(kind)


def backend_class(spec: str) -> type[Backend]:
    """The Backend class a spec names (:class:`BackendError` for a plugin's factory function)."""
    kind, target = _target(spec)
    if not isinstance(target, type):
        raise BackendError(f"backend plugin {kind!r} is a factory function, not a class")
    cls: type[Backend] = target
    return cls


def check_spec(spec: str, task: Task, **options: Any) -> None:
    """Can this spec, with these options, score ``task``?  No model is loaded.  (A plugin
    without a ``check_spec`` is checked when it is built.)"""
    kind, target = _target(spec)
    check: Callable[..., None] | None = getattr(target, "check_spec", None)
    if check is None:
        return
    if kind in _KINDS:
        check(spec, dict(options), task)
        return
    try:
        check(spec, dict(options), task)
    except SpeculabelError:
        raise
    except Exception as e:
        raise BackendError(f"backend plugin {kind!r} failed to check {_safe(spec)!r}: "
                           f"{type(e).__name__}: {e}") from e


def load_backend(spec: str, **options: Any) -> Backend:
    """Build the backend a spec names; options go to that kind's ``from_spec``."""
    kind, target = _target(spec)
    factory = getattr(target, "from_spec", None) if isinstance(target, type) else target
    if kind in _KINDS:
        backend: Backend = (factory(spec, **options) if factory is not None
                            else target(spec, **options))
        return backend
    try:
        built = factory(spec, **options) if factory is not None else target(spec, **options)
    except SpeculabelError:
        raise
    except Exception as e:
        raise BackendError(f"backend plugin {kind!r} failed to build {_safe(spec)!r}: "
                           f"{type(e).__name__}: {e}") from e
    if not isinstance(built, Backend):
        raise BackendError(f"backend plugin {kind!r} built a {type(built).__name__} for "
                           f"{_safe(spec)!r}, not a speculabel Backend")
    return built


def _safe(spec: str) -> str:
    """A spec fit for a message: credentials inside a URL (``user:key@host``) are hidden."""
    from speculabel.redact import redact

    return redact(spec)
