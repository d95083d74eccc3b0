"""One error base: every error the package raises derives from SpeculabelError, and the command
line turns any that no command handled into one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import speculabel
from speculabel.backends.base import BackendError
from speculabel.backends.llamacpp.engine import Unanswerable
from speculabel.backends.openai.parse import Abstain, SharedFirstToken
from speculabel.backends.openai.transport import Failed, Unavailable
from speculabel.cascade.config import ConfigError
from speculabel.certify.api import CalibrationError
from speculabel.errors import PendingError, SpeculabelError
from speculabel.io.datasets import DataMissing
from speculabel.io.lock import OutputBusyError
from speculabel.io.results import ResultsError, ResultsWriteError
from speculabel.io.tables import InputError
from speculabel.io.votes import VoteStoreError
from speculabel.match.output import MatchOutputError
from speculabel.models import ModelError
from speculabel.policy import PolicyError
from speculabel.scale.settings import EngineError
from speculabel.serve.app import ServeError
from speculabel.serve.batcher import Closed
from speculabel.serve.log import LogError
from speculabel.serve.schema import BadRequest
from speculabel.tasks import TaskError

# each class, and the built-in base that code written before the common base catches
HISTORICAL = {
    TaskError: ValueError, PolicyError: ValueError, EngineError: ValueError,
    ModelError: RuntimeError, BackendError: RuntimeError, InputError: ValueError,
    ResultsError: ValueError, VoteStoreError: RuntimeError, ConfigError: ValueError,
    DataMissing: FileNotFoundError, PendingError: Exception, Unavailable: Exception,
    Failed: Exception, Abstain: Exception, SharedFirstToken: Exception, Unanswerable: Exception,
    CalibrationError: ValueError, OutputBusyError: ValueError, ResultsWriteError: ValueError,
    MatchOutputError: ValueError, ServeError: ValueError, LogError: ValueError,
    Closed: RuntimeError, BadRequest: ValueError,
}


@pytest.mark.parametrize("cls", list(HISTORICAL), ids=lambda c: c.__name__)
def test_every_error_derives_from_the_one_base_and_keeps_its_old_one(cls: type) -> None:
    assert issubclass(cls, SpeculabelError)
    assert issubclass(cls, HISTORICAL[cls])
    with pytest.raises(SpeculabelError):
        made = {PendingError: lambda: PendingError(["a"]),
                OutputBusyError: lambda: OutputBusyError(Path("out.jsonl"), 1),
                BadRequest: lambda: BadRequest(400, "items", "x")}
        raise made[cls]() if cls in made else cls("x")


def test_the_base_is_exported() -> None:
    assert speculabel.SpeculabelError is SpeculabelError
    assert "SpeculabelError" in speculabel.__all__


def test_no_error_class_of_the_package_is_left_out() -> None:
    """Every exception class defined in speculabel (but the private ``_Retry``) is listed above."""
    import importlib
    import pkgutil

    found = set()
    for mod in pkgutil.walk_packages(speculabel.__path__, "speculabel."):
        if mod.name.endswith("__main__"):
            continue  # running it is the command line
        try:
            module = importlib.import_module(mod.name)
        except ImportError:  # an optional library (ray, matplotlib) is absent: not our class
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__ and not obj.__name__.startswith("_")):
                found.add(obj)
    assert {BackendError, TaskError, Unavailable, DataMissing} <= found
    from speculabel.interrupt import Interrupted

    # a stop on Ctrl-C/SIGTERM is no error: a KeyboardInterrupt that `except Exception` lets by
    assert issubclass(Interrupted, KeyboardInterrupt) and not issubclass(Interrupted, Exception)
    left = found - {SpeculabelError, Interrupted}
    assert left <= set(HISTORICAL), left - set(HISTORICAL)


def _main(monkeypatch: pytest.MonkeyPatch, exc: BaseException, argv: list[str]) -> int:
    """Run the ``speculabel`` entry point with ``exc`` raised deep inside ``models list``."""
    import speculabel.models as models
    from speculabel.cli import main

    def boom(name: str) -> bool:
        raise exc

    monkeypatch.setattr(models, "is_installed", boom)
    monkeypatch.setattr(sys, "argv", ["speculabel", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code or 0)


def test_an_uncaught_error_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = _main(monkeypatch, VoteStoreError("the store /x/votes.sqlite is locked\nby pid 7"),
                 ["models", "list"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == ["error: the store /x/votes.sqlite is locked; by pid 7"]
    assert "Traceback" not in err


def test_items_left_pending_exit_3(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = _main(monkeypatch, PendingError(["7", "9"]), ["models", "list"])
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1 and "'7', '9'" in err


def test_other_errors_still_show_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only our errors are turned into a line: a bug must stay visible."""
    import speculabel.models as models
    from speculabel.cli import main

    def boom(name: str) -> bool:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(models, "is_installed", boom)
    monkeypatch.setattr(sys, "argv", ["speculabel", "models", "list"])
    with pytest.raises(ZeroDivisionError):
        main()


def test_the_installed_command_maps_an_error_raised_deep_inside(tmp_path: object) -> None:
    """The real entry point in its own process: no traceback, one line, status 2."""
    code = ("import sys, speculabel.models as m\n"
            "from speculabel.io.tables import InputError\n"
            "def boom(name): raise InputError('rows.csv, row 3: no text')\n"
            "m.is_installed = boom\n"
            "sys.argv = ['speculabel', 'models', 'list']\n"
            "from speculabel.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: rows.csv, row 3: no text"]
