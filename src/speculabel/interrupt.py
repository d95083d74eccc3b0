"""A clean stop on Ctrl-C (SIGINT) or SIGTERM, wherever the run is.

Python's own Ctrl-C raises :class:`KeyboardInterrupt` at whatever bytecode runs next: inside a
ctypes callback (where it is printed and lost, so the run goes on), between a record's write and
its bookkeeping (so the "saved" count and the file disagree), and SIGTERM is not caught at all.
:func:`stop_on_signals` installs one handler for both signals that

* records the signal (the *stop flag*), so that the next :func:`check` raises even if the first
  exception was swallowed; long loops call :func:`check` between model calls;
* raises :class:`Interrupted` at once, except inside :func:`deferred` sections (writing a
  record), where it only records it: the section finishes and raises on leaving; and except
  inside llama-cpp-python's own code (its ctypes callbacks would print the exception and drop
  it), where the next :func:`check`, at most one model call later, raises instead.

A second Ctrl-C while stopping raises again at once.  :class:`Interrupted` derives from
:class:`KeyboardInterrupt` (not from :class:`~speculabel.errors.SpeculabelError`): an
interruption is not an error, and it must get through ``except Exception`` handlers (a worker
that turns its own failures into abstentions, say).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

_HANDLED = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, Any] = {"signal": None, "deferred": 0}


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        """The conventional shell status of a process stopped by this signal (130, 143)."""
        return 128 + self.signum


def requested() -> int | None:
    """The signal that asked the run to stop, if any."""
    sig: int | None = _state["signal"]
    return sig


def request(signum: int = signal.SIGINT) -> None:
    """Ask the run to stop (what the signal handler does; tests and embedding code may too)."""
    _state["signal"] = int(signum)


def reset() -> None:
    """Forget a stop request (a new run in the same process)."""
    _state["signal"] = None


def check() -> None:
    """Raise :class:`Interrupted` when a stop was asked for.  Call it between model calls: it
    costs a dictionary look-up, and it is what makes a stop prompt whatever swallowed the first
    exception."""
    sig = _state["signal"]
    if sig is not None and not _state["deferred"]:
        raise Interrupted(sig)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section a signal must not cut in two (a record and its count): a stop asked for inside
    is raised when the section ends."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
    check()


def _in_ctypes_code(frame: FrameType | None) -> bool:
    """Is the main thread inside a library whose ctypes callbacks would swallow an exception?"""
    name = frame.f_code.co_filename if frame is not None else ""
    return "llama_cpp" in name or "ctypes" in name


def _handler(signum: int, frame: FrameType | None) -> None:
    again = _state["signal"] is not None
    _state["signal"] = int(signum)
    if again or not (_state["deferred"] or _in_ctypes_code(frame)):
        raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as described in the module docstring, then restore the
    previous handlers.  Outside the main thread (where no handler can be installed) it does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _HANDLED}
    reset()
    for s in _HANDLED:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        reset()  # the exception, if any, carries the signal on; nothing else may see it
