"""The one way a test says that something it needs is missing (a model, a server, a data set, an
optional package).

Outside CI the test is skipped with a reason that names what is missing and how to get it.  Under
CI (the environment variable ``CI`` set, as ``.ci/run`` does) the test FAILS instead: CI installs
everything first, so a missing part there is a broken setup, and a skip would let it pass.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str, *, module_level: bool = False) -> NoReturn:
    """Skip (fail under CI) saying ``what`` is missing; ``module_level`` from a module's body."""
    msg = f"missing: {what}"
    if under_ci():
        pytest.fail(f"{msg} (CI is set: everything must be installed)", pytrace=False)
    pytest.skip(msg, allow_module_level=module_level)


def module(name: str, install: str, *, module_level: bool = False) -> ModuleType:
    """``import name``, or :func:`missing` naming the module and how to ``install`` it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"Python module {name} ({e}); {install}", module_level=module_level)


def model(name: str) -> Path:
    """The GGUF file of a catalogue model, or :func:`missing` naming it."""
    from speculabel import models

    if not models.is_installed(name):
        missing(f"model {name} not installed: run `speculabel models pull {name}`")
    return models.model_path(name)


def data(get: Callable[[], T], what: str) -> T:
    """``get()``, or :func:`missing` naming ``what`` when it raises FileNotFoundError (the
    shared data sets, :class:`speculabel.io.datasets.DataMissing`)."""
    try:
        return get()
    except FileNotFoundError as e:
        missing(f"data set {what} ({e})")


EMBED = "pip install 'speculabel[embed]'"
BENCH = "pip install 'speculabel[bench]'"
RAY = "pip install 'speculabel[ray]'"
PARQUET = "pip install 'speculabel[parquet]'"
LLAMA = "run scripts/install-llama.sh"
