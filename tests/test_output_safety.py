"""Nothing lost, nothing mixed, whatever else runs or fails: real ``speculabel classify``
processes on one output (one is refused) and on two outputs sharing one vote store (both
finish), a full disk (``RLIMIT_FSIZE``), and vote-store faults injected mid-run.

No model is loaded: the judge (and the LLM worker) is the fake OpenAI-compatible endpoint
(``fake_openai``), the other worker the VADER lexicon.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from speculabel.cli import app

pytest_plugins = ["fake_openai"]


def _table(path: Path, n: int) -> Path:
    path.write_text("id,text\n" + "".join(f"{i},plain fact number {i}\n" for i in range(n)))
    return path


def _records(out: Path) -> list[dict[str, Any]]:
    data = out.read_text()
    assert data == "" or data.endswith("\n"), "a torn last line"
    return [json.loads(x) for x in data.splitlines()]


def _ids_once(out: Path, n: int) -> None:
    ids = [r["id"] for r in _records(out)]
    assert sorted(ids, key=int) == [str(i) for i in range(n)], "every id exactly once"


def _cmd(inp: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "speculabel", "classify", str(inp), "-o", str(out),
            "--task", "sentiment", "--id-column", "id", f"--judge=openai:m1@{url}", "-q", *extra]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "SPECULABEL_HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}


# ------------------------------------------------------------------ two runs


@pytest.mark.parametrize("attempt", range(10))
def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path, fake: Any,
                                                    attempt: int) -> None:
    f, url = fake
    f.delay_s = 1.0  # the winner cannot finish before the loser has tried, whatever the load
    inp, out = _table(tmp_path / "in.csv", 12), tmp_path / "out.jsonl"
    args = _cmd(inp, out, url, "--judge-only", "--no-votes", "--batch-size", "1")
    procs = [subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.time() + 60
    while all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.05)
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    f.delay_s = 0.0
    _, err = loser.communicate(timeout=30)
    assert loser.returncode == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and f"pid {winner.pid}" in lines[0], err
    _, err = winner.communicate(timeout=60)
    assert winner.returncode == 0, err
    _ids_once(out, 12)
    assert not Path(f"{out}.lock").exists()


def test_a_run_killed_with_sigkill_does_not_block_the_next(tmp_path: Path, fake: Any) -> None:
    f, url = fake
    f.delay_s = 0.2
    inp, out = _table(tmp_path / "in.csv", 10), tmp_path / "out.jsonl"
    args = _cmd(inp, out, url, "--judge-only", "--no-votes", "--batch-size", "1")
    proc = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Path(f"{out}.lock").exists()  # left behind, but no longer locked by anyone
    f.delay_s = 0.0
    res = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    _ids_once(out, 10)


@pytest.mark.parametrize("attempt", range(10))
def test_two_runs_on_different_outputs_share_one_vote_store(tmp_path: Path, fake: Any,
                                                            attempt: int) -> None:
    _, url = fake
    inp = _table(tmp_path / "in.csv", 16)
    votes = tmp_path / "shared" / "votes.sqlite"
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    procs = [subprocess.Popen(_cmd(inp, o, url, f"--workers=vader,openai:m2@{url}",
                                   "--votes", str(votes), "--batch-size", "1"),
                              env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for o in outs]
    for p, o in zip(procs, outs, strict=True):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "locked" not in err
        _ids_once(o, 16)
    with sqlite3.connect(votes) as db:  # both wrote the same keys: one row per model and item
        assert db.execute("SELECT COUNT(*) FROM votes WHERE model='vader'").fetchone()[0] == 16


def test_calibrate_refuses_a_config_another_calibrate_is_writing(tmp_path: Path,
                                                                 fake: Any) -> None:
    from speculabel.io.lock import OutputLock

    _, url = fake
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f"{i},t{i}\n" for i in range(30)))
    with OutputLock(tmp_path / "c.toml"):
        res = CliRunner().invoke(app, ["calibrate", str(tmp_path / "in.csv"), "--task",
                                       "sentiment", "--id-column", "id",
                                       f"--workers=vader,openai:m2@{url}",
                                       f"--judge=openai:m1@{url}", "-o", str(tmp_path / "c.toml"),
                                       "--votes", str(tmp_path / "v.sqlite"), "-q"])
    assert res.exit_code == 2, res.output
    assert f"pid {os.getpid()}" in res.output and "c.toml" in res.output
    assert not (tmp_path / "c.toml").exists()


# ------------------------------------------------------------------ a full disk


def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path: Path, fake: Any) -> None:
    import resource

    _, url = fake
    inp, out = _table(tmp_path / "in.csv", 30), tmp_path / "out.jsonl"
    args = _cmd(inp, out, url, "--judge-only", "--no-votes")
    limit = 4096

    def small_disk() -> None:  # files larger than 4 KiB cannot be written (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
                         preexec_fn=small_disk)
    assert res.returncode == 2, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    saved = _records(out)  # every line whole
    assert 0 < len(saved) < 30 and out.stat().st_size <= limit
    assert re.search(rf"cannot write {re.escape(str(out))}: the file is too large; "
                     rf"{len(saved)} records are saved .*rerun the same command", lines[0]), lines
    done = [r["id"] for r in saved]
    res = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    _ids_once(out, 30)
    assert [r["id"] for r in _records(out)][: len(done)] == done  # nothing saved was rewritten


# ------------------------------------------------------------------ vote-store faults


def _classify(tmp: Path, url: str, votes: Path) -> tuple[int, str]:
    inp = _table(tmp / "in.csv", 24)
    res = CliRunner().invoke(app, ["classify", str(inp), "-o", str(tmp / "out.jsonl"), "--task",
                                   "sentiment", "--id-column", "id",
                                   f"--workers=vader,openai:m2@{url}", f"--judge=openai:m1@{url}",
                                   "--votes", str(votes), "--batch-size", "4", "-q"])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output


def test_a_store_that_turns_read_only_mid_run(tmp_path: Path, fake: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from speculabel.io.votes import VoteStore

    _, url = fake
    real = VoteStore.put_many
    calls = {"n": 0}

    def put_many(self: VoteStore, *a: Any, **k: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # from now on SQLite refuses every write to this file
            self.conn.execute("PRAGMA query_only=1")
        real(self, *a, **k)

    monkeypatch.setattr(VoteStore, "put_many", put_many)
    code, text = _classify(tmp_path, url, tmp_path / "v.sqlite")
    assert code == 2, text
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    assert "readonly" in lines[0] and "choose a writable file with --votes" in lines[0]
    assert "--no-votes" in lines[0] and str(tmp_path / "v.sqlite") in lines[0]
    recs = _records(tmp_path / "out.jsonl")  # whole records only, each once
    assert 0 < len(recs) < 24 and len({r["id"] for r in recs}) == len(recs)
    assert f"the {len(recs)} records decided are saved in" in lines[0]


def test_a_store_with_a_damaged_page(tmp_path: Path, fake: Any) -> None:
    from speculabel.io.votes import VoteStore
    from speculabel.records import Vote

    _, url = fake
    votes = tmp_path / "v.sqlite"
    with VoteStore(votes) as store:  # enough votes for the table to span many pages
        store.put_many("fp", "task", [(f"k{i:05d}", Vote.from_probs("m", {"a": 0.5, "b": 0.5}))
                                      for i in range(3000)])
    with sqlite3.connect(votes) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='votes'").fetchone()[0]
    data = bytearray(votes.read_bytes())
    data[(root - 1) * page:root * page] = b"\xa5" * page  # the votes table's root page
    votes.write_bytes(bytes(data))
    code, text = _classify(tmp_path, url, votes)
    assert code == 2, text
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    assert "is damaged" in lines[0] and "move or delete it" in lines[0] and "--no-votes" in lines[0]
    assert "writable" not in lines[0]  # the remedy of a read-only store would not help
    assert "nothing was written" in lines[0]
    assert not (tmp_path / "out.jsonl").exists()  # nothing half-written: no 0-byte results
    assert not (tmp_path / "out.jsonl.meta.json").exists()
