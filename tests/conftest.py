"""Shared fixtures: where the real models are, and no network for Hugging Face libraries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import needs


@pytest.fixture(scope="session", autouse=True)
def _hf_offline() -> Iterator[None]:
    """Tests never reach a model hub (nothing can be fetched from one here anyway)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


def _installed(name: str) -> Path:
    """A model's file; a skip naming it when it is not installed (a failure under CI)."""
    return needs.model(name)


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


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread: a model this small gains nothing from two, and on a shared machine
    two spinning threads make it about 20 times slower."""
    torch = needs.module("torch", "pip install torch (a CPU build)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
