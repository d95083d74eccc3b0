"""Shared fixtures: where the real models are, and no network for Hugging Face libraries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from speculabel import models


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    """Tests never reach a model hub (nothing can be fetched from one here anyway)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


def _installed(name: str) -> Path:
    if not models.is_installed(name):
        msg = f"model {name} not installed: run `speculabel models pull {name}`"
        if os.environ.get("CI"):  # CI installs every model first: a missing one is a failure
            pytest.fail(msg)
        pytest.skip(msg)
    return models.model_path(name)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return _installed("smollm2-135m")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return _installed("gemma3-270m")


@pytest.fixture(scope="session")
def qwen05_path() -> Path:
    return _installed("qwen2.5-0.5b")


@pytest.fixture(scope="session")
def qwen15_path() -> Path:
    return _installed("qwen2.5-1.5b")
