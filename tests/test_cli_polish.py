"""What a user meets in the first hour, beyond the bad-input table: a clean stop on a signal, a
judge that is never loaded when never asked, configs that travel, whole tables in a pipe, a
quiet end when the reader of stdout goes away, and calibrate's answers when nothing certifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from speculabel import interrupt
from speculabel.cli import app

# ------------------------------------------------------------------------------ the stop flag


def test_a_stop_asked_for_while_a_record_is_written_comes_after_it() -> None:
    interrupt.reset()
    written = []
    try:
        with pytest.raises(interrupt.Interrupted) as info, interrupt.deferred():
            interrupt.request(signal.SIGTERM)
            interrupt.check()  # inside the section: nothing yet
            written.append("record")
        assert written == ["record"]
        assert info.value.signum == signal.SIGTERM and info.value.exit_status == 143
        assert isinstance(info.value, KeyboardInterrupt)  # gets through `except Exception`
    finally:
        interrupt.reset()
    interrupt.check()  # reset: no stop pending


def test_the_handler_raises_at_once_outside_a_section_and_only_records_inside() -> None:
    # whatever was there before (a shell starts background jobs with SIGINT ignored)
    before = signal.getsignal(signal.SIGINT)
    with interrupt.stop_on_signals():
        with pytest.raises(interrupt.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs at the next bytecode
                pass
        interrupt.reset()
        with pytest.raises(interrupt.Interrupted), interrupt.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            written = True  # the section went on to its end
        assert written
    interrupt.reset()
    assert signal.getsignal(signal.SIGINT) is before  # restored


# ------------------------------------------------------------------------------ the lazy judge


def _cfg(judge: str, threshold: float) -> Any:
    from speculabel.cascade.config import make_config

    return make_config({"task": "sentiment", "workers": ["vader"], "judge": judge,
                        "policy": "confident-majority", "threshold": threshold})


def test_a_judge_no_item_escalates_to_is_never_loaded(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from speculabel.backends import registry
    from speculabel.backends.base import FunctionBackend
    from speculabel.cascade.build import build_cascade
    from speculabel.records import Item

    judge = tmp_path / "judge.gguf"
    judge.write_bytes(b"GGUF, never read")
    loaded: list[str] = []
    real = registry.load_backend

    def spy(spec: str, **options: Any) -> Any:
        loaded.append(spec)
        if spec.startswith("gguf:"):
            return FunctionBackend(spec, lambda task, items: [{"neutral": 1.0}] * len(items))
        return real(spec, **options)

    monkeypatch.setattr(registry, "load_backend", spy)
    items = [Item("1", {"text": "I love it"}), Item("2", {"text": "Awful, just awful"})]
    cascade = build_cascade(_cfg(f"gguf:{judge}", 0.0))  # certified to need no judge
    try:
        recs = cascade.classify(items)
    finally:
        cascade.close()
    assert [r.decided_by for r in recs] == ["workers", "workers"]
    assert loaded == ["vader"]  # the judge's model was never built
    cascade = build_cascade(_cfg(f"gguf:{judge}", 1.0))  # everything escalates
    try:
        recs = cascade.classify(items)
    finally:
        cascade.close()
    assert [r.label for r in recs] == ["neutral", "neutral"]
    assert loaded == ["vader", "vader", f"gguf:{judge}"]  # built on first use, once


# ------------------------------------------------------------------------------ portable configs


def test_a_config_names_its_task_file_relative_to_itself(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from speculabel.cascade.config import load_config, make_config, save_config
    from speculabel.cli.calibrate import task_for_config
    from speculabel.tasks import load_task

    (tmp_path / "tasks").mkdir()
    task_file = tmp_path / "tasks" / "mood.toml"
    task_file.write_text('name = "mood"\ninstructions = "The mood."\nfields = ["text"]\n'
                         'labels = ["sad", "glad"]\n')
    monkeypatch.chdir(tmp_path)
    assert task_for_config("sentiment") == "sentiment"
    cfg = make_config({"task": task_for_config("tasks/mood.toml"), "workers": ["learner:minilm"]})
    path = save_config(cfg, tmp_path / "c6" / "c.toml")
    assert 'task = "../tasks/mood.toml"' in path.read_text()
    monkeypatch.chdir(tmp_path / "c6")  # read from elsewhere: the same file
    assert load_task(load_config(Path("c.toml")).task).name == "mood"


# ------------------------------------------------------------------------------ output


def test_tables_are_whole_when_stdout_is_not_a_terminal() -> None:
    from speculabel.models import CATALOGUE

    res = CliRunner().invoke(app, ["models", "list"])  # a pipe, not a terminal
    assert res.exit_code == 0, res.output
    for info in CATALOGUE.values():
        assert info.family in res.output and info.licence.split(" (")[0] in res.output
    assert "…" not in res.output
    assert "similarity:minilm" in res.output


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "speculabel", "tasks"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -0`: nobody reads
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert err == b"", err


# ------------------------------------------------------------------------------ calibrate


def test_the_plan_prints_when_a_figure_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    from speculabel.certify.plan import CascadePlan
    from speculabel.certify.threshold import calibrate_threshold
    from speculabel.cli.calibrate_plan import print_plan

    # nothing scores above 0.5 and everything there disagrees: only the strict end certifies
    scores = np.full(60, 0.5)
    res = calibrate_threshold(scores, np.zeros(60, dtype=bool), 0.7, 0.1, scope="dataset")
    assert res.feasible and res.coverage == 0 and res.agreement is None
    print_plan(CascadePlan("confident-majority", res, n_test=60), "judge j", 60)
    assert "decide no item" in capsys.readouterr().err
    assert "decide any item" in res.message() and "Traceback" not in res.message()


def test_an_unreachable_target_is_explained_by_one_consistent_figure() -> None:
    from speculabel.certify.threshold import calibrate_threshold, max_feasible_target

    rng = np.random.default_rng(0)
    scores = np.linspace(1.0, 0.0, 200)
    agree = rng.random(200) < np.linspace(0.7, 0.95, 200)  # the most confident agree least
    res = calibrate_threshold(scores, agree, 0.9, 0.1, scope="workers")
    assert not res.feasible
    best = max_feasible_target(scores, agree, 0.1, scope="workers")
    msg = res.message(best, searched=True)
    # the trial's case: a single threshold bounds agreement at 74 %, the sequence reaches 0.56
    assert best is not None and res.best_bound > best + 0.1
    assert "short by" not in msg and "best any threshold certifies" not in msg
    assert f"about {best:.3f}" in msg
    assert "tested on its own" in msg  # a single threshold's bound is shown as just that
