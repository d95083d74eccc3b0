"""A real OpenAI-compatible server for tests (a pytest plugin: ``pytest_plugins =
["server_fixture"]``): :class:`speculabel.backends.openai.local_server.LlamaServer` on 127.0.0.1,
for the session or made per test (the fault tests kill and restart it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import needs
from speculabel.backends.openai.local_server import LlamaServer, free_port

__all__ = ["LlamaServer", "free_port", "llama_server", "make_llama_server"]

SERVER_MODELS = ("smollm2-135m", "qwen2.5-0.5b")


def server_prerequisites(models: tuple[str, ...] = SERVER_MODELS) -> dict[str, Path]:
    """The GGUF paths of ``models``, or a pytest skip naming what is missing."""
    needs.module("llama_cpp.server", needs.LLAMA)
    return {m: needs.model(m) for m in models}


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """smollm2-135m and qwen2.5-0.5b behind one port, for the whole test session."""
    paths = server_prerequisites()
    srv = LlamaServer(paths, workdir=tmp_path_factory.mktemp("llama-server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def make_llama_server(tmp_path: Path) -> Iterator[Any]:
    """Factory for servers a test may kill and restart; all are stopped afterwards."""
    made: list[LlamaServer] = []

    def make(models: tuple[str, ...] = ("smollm2-135m",), **kw: Any) -> LlamaServer:
        paths = server_prerequisites(models)
        srv = LlamaServer(paths, workdir=tmp_path / f"server{len(made)}", **kw)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()
