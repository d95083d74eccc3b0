"""One run per output: an OS advisory lock on a sidecar ``OUT.lock``, held for the whole run.

Why an OS lock and not a "lock file exists" flag: the kernel drops an ``flock`` when its process
dies, ``kill -9`` included, so a killed run never blocks the next one.  The lock file holds the
holder's pid (for the message a second run prints) and is removed when the run ends; a run that
takes the lock checks that the file it locked is still the one on disk (a run ending at the same
moment may just have removed it), so two runs can never both believe they hold it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from speculabel.errors import SpeculabelError
from speculabel.io.tables import InputError


class OutputBusyError(InputError, SpeculabelError):
    """Another process holds the lock of this output; ``pid`` names it when known."""

    def __init__(self, target: Path, pid: int | None) -> None:
        self.target, self.pid = target, pid
        who = f"pid {pid}" if pid else "a process whose pid it does not name"
        super().__init__(f"{target} is in use by another speculabel run ({who}); wait for it to "
                         "end, or choose another output")


def lock_path(target: Path) -> Path:
    """``OUT.lock`` beside ``OUT`` (of the real file, when ``OUT`` is a symbolic link)."""
    real = target.resolve()
    return real.with_name(real.name + ".lock")


class OutputLock:
    """An exclusive, non-blocking lock on ``target`` (see the module docstring)."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock at once or raise :class:`OutputBusyError`; never waits."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise OutputBusyError(self.target, pid) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed it between our open and our lock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise OutputBusyError(self.target, None)

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see the module docstring)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The holder's pid; it writes it right after locking, so wait a moment for it."""
    for _ in range(20):
        raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if raw.isdigit():
            return int(raw)
        time.sleep(0.01)
    return None


@contextlib.contextmanager
def output_lock(target: str | Path) -> Iterator[OutputLock]:
    """``with output_lock(path):`` hold the lock of ``path`` for the block."""
    with OutputLock(target) as lock:
        yield lock
