"""Waiting on a CLI run started as a subprocess (the kill-and-resume tests)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str, *,
               timeout: float = 300.0, poll: float = 0.2) -> None:
    """Return once ``ready()`` holds; fail the test if the run ends first or takes too long (so
    a kill meant to land mid-run is never sent to a run that already finished)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            err = proc.communicate()[1] or ""
            text = err.decode(errors="replace") if isinstance(err, bytes) else err
            pytest.fail(f"{what}: the run ended first: {text[-2000:]}")
        time.sleep(poll)
    proc.kill()  # never leave a run behind to load the machine
    proc.wait()
    pytest.fail(f"{what}: not after {timeout:g} s")
