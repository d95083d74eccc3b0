"""Third-party backends register by entry point (group ``speculabel.backends``).

A tiny distribution (a package and its ``.dist-info`` with ``entry_points.txt``) is written into a
temporary folder put on ``sys.path``, where :mod:`importlib.metadata` finds it as it finds an
installed one; no network, nothing installed for good.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speculabel.backends import registry
from speculabel.backends.base import Backend, BackendError
from speculabel.records import Item
from speculabel.tasks import SENTIMENT

PACKAGE = '''
from speculabel.backends.base import Backend
from speculabel.records import Vote

class Echo(Backend):
    """Says the label named after the colon of its spec, every time."""

    def __init__(self, spec, label=None):
        self.spec = spec
        self.label = label or spec.partition(":")[2]

    @classmethod
    def check_spec(cls, spec, options, task=None):
        from speculabel.backends.base import BackendError
        if task is not None and spec.partition(":")[2] not in task.label_names:
            raise BackendError(f"{spec}: {spec.partition(':')[2]!r} is not a label of {task.name}")

    def fingerprint(self):
        return f"echo:{self.label}"

    def score(self, task, items):
        return [Vote.from_probs(self.spec, {lab: float(lab == self.label)
                                            for lab in task.label_names}) for _ in items]

def make(spec, **options):
    return Echo(spec, **options)

def make_nothing(spec, **options):
    return "not a backend"

def make_crash(spec, **options):
    raise ZeroDivisionError("the plugin's own bug")

class NotABackend:
    pass
'''

ENTRY_POINTS = """\
[speculabel.backends]
echo = sl_plugin_demo:Echo
echofn = sl_plugin_demo:make
nothing = sl_plugin_demo:make_nothing
crash = sl_plugin_demo:make_crash
notabackend = sl_plugin_demo:NotABackend
broken = sl_plugin_absent_module:Thing
openai = sl_plugin_demo:Echo
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    (site / "sl_plugin_demo").mkdir(parents=True)
    (site / "sl_plugin_demo" / "__init__.py").write_text(PACKAGE)
    info = site / "sl_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sl-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "sl_plugin_demo", raising=False)
    return site


def test_a_plugin_kind_is_found_but_imported_only_when_used(plugin: Path) -> None:
    assert registry.kind_of("echo:positive") == "echo"
    assert "echo" in registry.available_kinds() and "vader" in registry.available_kinds()
    assert "sl_plugin_demo" not in sys.modules  # found, not imported
    registry.kind_of("vader")
    assert "sl_plugin_demo" not in sys.modules
    b = registry.load_backend("echo:positive")
    assert "sl_plugin_demo" in sys.modules
    assert isinstance(b, Backend) and type(b).__name__ == "Echo"
    assert [v.label for v in b.score(SENTIMENT, [Item("1", {"text": "x"})])] == ["positive"]


def test_a_factory_function_and_options(plugin: Path) -> None:
    b = registry.load_backend("echofn:x", label="negative")
    assert b.fingerprint() == "echo:negative"


def test_the_plugin_check_spec_runs_before_any_model_loads(plugin: Path) -> None:
    registry.check_spec("echo:neutral", SENTIMENT)
    with pytest.raises(BackendError, match="'maybe' is not a label of sentiment"):
        registry.check_spec("echo:maybe", SENTIMENT)


@pytest.mark.parametrize(("spec", "phrase"), [
    ("broken:x", r"backend plugin 'broken' \('sl_plugin_absent_module:Thing' from "
                 r"sl-plugin-demo 0.1\) cannot be loaded: ModuleNotFoundError"),
    ("notabackend:x", "backend plugin 'notabackend' .* not a Backend subclass"),
    ("nothing:x", "backend plugin 'nothing' built a str .* not a speculabel Backend"),
    ("crash:x", "backend plugin 'crash' failed to build 'crash:x': ZeroDivisionError"),
])
def test_a_broken_plugin_is_a_backend_error_naming_it(plugin: Path, spec: str, phrase: str) -> None:
    with pytest.raises(BackendError, match=phrase):
        registry.load_backend(spec)


def test_a_plugin_cannot_replace_a_built_in_kind(plugin: Path) -> None:
    assert registry.kind_of("openai:m@http://127.0.0.1:1/v1") == "openai"
    assert registry.backend_class("openai:m@http://127.0.0.1:1/v1").__name__ == "OpenAIBackend"


def test_an_unknown_kind_names_the_plugin_kinds_too(plugin: Path) -> None:
    with pytest.raises(BackendError, match=r"unknown model 'nope:x'.*echo:\.\.\."):
        registry.kind_of("nope:x")


def test_without_the_plugin_its_kind_is_unknown() -> None:
    with pytest.raises(BackendError, match="unknown model 'echo:x'"):
        registry.kind_of("echo:x")


def test_classify_runs_a_plugin_backend_from_the_command_line(plugin: Path, tmp_path: Path) -> None:
    from speculabel.cli import app

    inp = tmp_path / "in.csv"
    inp.write_text("text\ngood\nbad\n")
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["classify", str(inp), "-o", str(out), "--task", "sentiment",
                                   "--text-column", "text", "--judge-only", "--judge",
                                   "echo:negative", "--no-votes", "-q"])
    assert res.exit_code == 0, res.output
    import json

    labels = [json.loads(line).get("label") for line in out.read_text().splitlines()]
    assert labels[-2:] == ["negative", "negative"]
