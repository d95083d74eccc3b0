"""A local OpenAI-compatible server for catalogue models: ``python -m llama_cpp.server``.

:class:`LlamaServer` writes a ``--config_file`` (several models behind one port, each under its
catalogue name as ``model_alias``), starts the server on 127.0.0.1 at a free port, waits until
``GET /v1/models`` answers, and stops it afterwards.  It can be killed and restarted on the same
port.  The tests and the throughput benchmark use it; a user can too, to put workers behind a
server without setting one up by hand.

llama-cpp-python's server keeps one model in memory at a time: a request for another model
behind the same port unloads the current one and loads the other (0.2-1 s).  A throughput
measurement should run one server per model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One ``llama_cpp.server`` process serving ``models`` (alias -> GGUF path)."""

    def __init__(
        self,
        models: Mapping[str, Path | str],
        *,
        port: int | None = None,
        n_ctx: int = 1024,
        n_threads: int = 2,
        workdir: Path | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.models = {k: Path(v) for k, v in models.items()}
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.model_options = dict(model_options or {})
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="speculabel-server-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, alias: str) -> str:
        return f"openai:{alias}@{self.base_url}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def config(self) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "models": [
                {
                    "model": str(path),
                    "model_alias": alias,
                    "n_ctx": self.n_ctx,
                    "n_threads": self.n_threads,
                    "n_threads_batch": self.n_threads,
                    "logits_all": True,  # needed for log-probabilities
                    "verbose": False,
                    **self.model_options,
                }
                for alias, path in self.models.items()
            ],
        }

    def start(self, timeout_s: float = 120.0) -> LlamaServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        cfg = self.workdir / "config.json"
        cfg.write_text(json.dumps(self.config(), indent=1), encoding="utf-8")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with code {self.proc.returncode}; log {self.log_path}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s:g} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crashed server would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
