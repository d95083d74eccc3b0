"""Every bad input and bad setting is refused cleanly: exit status, a message naming the file,
row or key, no traceback, and the output file as it should be afterwards.

One table, one line per case (add a case by adding a line).  The cases need no model: the
workers are the VADER lexicon and a fake OpenAI-compatible endpoint on 127.0.0.1
(``fake_openai``), which is also the judge.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from procs import wait_until
from speculabel.cli import app

pytest_plugins = ["fake_openai"]

CSV = "id,text\n1,I love this phone\n2,Worst service ever\n3,The bus leaves at nine\n"
PAIRS = "a,b\nmy card is lost,I lost my card\nhow do I top up,change my PIN\n"
MOOD = ('name = "mood"\ninstructions = "The mood of the text."\nfields = ["text"]\n'
        'labels = ["negative", "neutral", "positive"]\n')
# 40 texts, half of them plainly negative (VADER, as the judge, disagrees with the fake workers)
MIXED = "id,text\n" + "".join(f"{i},{'I hate this awful broken mess' if i % 2 else 'I love it'}\n"
                               for i in range(40))


@dataclass
class Case:
    name: str
    args: list[str]  # {in}, {out}, {url}, {tmp} are filled in
    code: int
    phrase: str = ""  # the message must contain it (case-insensitive)
    files: dict[str, bytes | str] = field(default_factory=dict)  # written under tmp first
    env: dict[str, str] = field(default_factory=dict)
    after: str = "absent"  # the output afterwards: absent | unchanged | records:N | empty
    first: list[str] | None = None  # a run made before, whose output the case starts from
    held: str = ""  # a file under tmp whose output lock another run holds during the case
    ids: list[str] | None = None  # records:N: the ids, in the file's order
    input_errors: list[str] | None = None  # records:N: the ids of the input-error records
    unwanted: str = ""  # the message must not contain it


W = "--workers=vader,openai:m2@{url}"
J = "--judge=openai:m1@{url}"
CAL = ["calibrate", "{in}", "--task", "sentiment", "--id-column", "id", W, J, "-o", "{tmp}/c.toml",
       "--votes", "{tmp}/v.sqlite", "-q"]
BASE = ["classify", "{in}", "-o", "{out}", "--task", "sentiment", "--id-column", "id", W, J, "-q"]

CASES = [
    # ------------------------------------------------------------ data lost or mixed
    Case("output is a foreign csv", [*BASE[:3], "{tmp}/victim.csv", *BASE[4:]], 2,
         "not a speculabel results file",
         files={"victim.csv": "name,age\nann,31\nbob,42"}, after="victim.csv unchanged"),
    Case("output is the input jsonl", ["classify", "{tmp}/in.jsonl", "-o", "{tmp}/in.jsonl", W, J],
         2, "is the input file", files={"in.jsonl": '{"text": "a"}\n{"text": "b"}'},
         after="in.jsonl unchanged"),
    Case("resume with another task", ["classify", "{in}", "-o", "{out}", "--task", "similar-ticket",
                                      "--text-a-column", "text", "--text-b-column", "text", J,
                                      "--workers=openai:m2@{url}"],
         2, "task: then 'sentiment', now 'similar-ticket'", first=BASE, after="unchanged"),
    Case("resume with another judge", [*BASE[:-2], "--judge=openai:m2@{url}",
                                       "--workers=vader,openai:m1@{url}"],
         2, "judge: then", first=BASE, after="unchanged"),
    Case("resume with another threshold", [*BASE, "--policy", "confident-majority",
                                           "--threshold", "0.9"],
         2, "threshold: then None, now 0.9", first=BASE, after="unchanged"),
    Case("resume with another input", [*BASE[:1], "{tmp}/other.csv", *BASE[2:]], 2,
         "input path: then", files={"other.csv": CSV}, first=BASE, after="unchanged"),
    Case("another run, explicitly allowed", [*BASE, "--policy", "confident-majority",
                                             "--threshold", "0.9", "--allow-changed-run"],
         0, "", first=BASE, after="records:3"),
    Case("broken jsonl line beside a real id 2", ["classify", "{tmp}/in.jsonl", "-o", "{out}",
                                                  "--id-column", "id", W, J, "-q"],
         0, "", files={"in.jsonl": '{"id": "1", "text": "a"}\nnot json\n{"id": "2", "text": "b"}\n'},
         after="records:3"),
    Case("duplicate id beside its first row", BASE, 0, "",
         files={"in.csv": "id,text\n1,good\n1,bad\n1#row2,ok\n"}, after="records:3"),
    Case("unquoted comma: too many fields", BASE, 0, "",
         files={"in.csv": "id,text\n1,Great product, but it broke after a day\n2,fine\n"},
         after="records:2"),
    Case("empty judge", [*BASE[:-2], "--judge", "", "-q"], 2, "the judge must not be empty"),
    # ------------------------------------------------------------ unreadable input
    Case("latin-1 bytes in one row", BASE, 0, "",
         files={"in.csv": b"id,text\n1,caf\xe9\n2,fine\n"}, after="records:2"),
    Case("a binary file", [*BASE[:1], "{tmp}/x.csv", *BASE[2:]], 2, "header",
         files={"x.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}),
    Case("a corrupt parquet file", [*BASE[:1], "{tmp}/x.parquet", *BASE[2:]], 2,
         "not a readable parquet file", files={"x.parquet": b"PAR1 nope"}),
    Case("header only", BASE, 2, "no data rows", files={"in.csv": "id,text\n"}),
    Case("header only, unknown column", BASE, 2, "unknown column(s) 'text'",
         files={"in.csv": "id,body\n"}),
    # ------------------------------------------------------------ wrongly typed settings
    Case("threshold as a string", [*BASE, "--config", "{tmp}/c.toml"], 2,
         "threshold: input should be a valid number", files={"c.toml": 'threshold = "0.8"\n'}),
    Case("batch_size as a string", [*BASE, "--config", "{tmp}/c.toml"], 2, "batch_size",
         files={"c.toml": 'batch_size = "8"\n'}),
    Case("workers as a number", [*BASE[:-3], J, "--config", "{tmp}/c.toml"], 2, "workers",
         files={"c.toml": "workers = 5\n"}),
    Case("judge as a number", [*BASE[:-2], "--config", "{tmp}/c.toml"], 2, "judge",
         files={"c.toml": "judge = 3\n"}),
    Case("early_exit as yes", [*BASE, "--config", "{tmp}/c.toml"], 2, "early_exit",
         files={"c.toml": 'early_exit = "yes"\n'}),
    Case("unknown key", [*BASE, "--config", "{tmp}/c.toml"], 2, "unknown key 'workerz'",
         files={"c.toml": 'workerz = ["a"]\n'}),
    # ------------------------------------------------------------ checked before any model loads
    Case("vader on a pair task", ["classify", "{tmp}/p.csv", "-o", "{out}", "--task",
                                  "similar-ticket", "--text-a-column", "a", "--text-b-column", "b",
                                  "--workers=vader,openai:m2@{url}", J],
         2, "only scores sentiment", files={"p.csv": PAIRS}),
    Case("unknown model after a good one", [*BASE[:-3], "--workers=vader,gpt-17", J], 2,
         "unknown model 'gpt-17'"),
    Case("pair task given --text-column", ["classify", "{tmp}/p.csv", "-o", "{out}", "--task",
                                           "similar-ticket", "--text-column", "a", J],
         2, "use --text-a-column and --text-b-column", files={"p.csv": PAIRS}),
    # ------------------------------------------------------------ unwritable places
    Case("vote store under a file", BASE, 2, "cannot open the vote store",
         files={"home": "a file"}, env={"SPECULABEL_HOME": "{tmp}/home/sub"}, after="empty"),
    Case("vote store that is not a database", [*BASE, "--votes", "{tmp}/v.sqlite"], 2,
         "is damaged (file is not a database): move or delete it",
         files={"v.sqlite": b"not sqlite at all " * 300}, after="absent"),
    Case("output under a file", [*BASE[:3], "{tmp}/f/out.jsonl", *BASE[4:]], 2,
         "is a file, not a directory", files={"f": "x"}),
    Case("output is a directory", [*BASE[:3], "{tmp}", *BASE[4:]], 2, "is a directory"),
    Case("output a format it cannot write", [*BASE[:3], "{tmp}/out.xlsx", *BASE[4:]], 2,
         "results are written as .jsonl (json lines), .csv, .tsv or .parquet",
         after="absent:out.xlsx"),
    Case("output in use by another run", BASE, 2, "in use by another speculabel run (pid",
         held="out.jsonl"),
    Case("output in use, resuming", BASE, 2, "in use by another speculabel run (pid",
         first=BASE, held="out.jsonl", after="unchanged"),
    # ------------------------------------------------------------ smaller
    Case("confident-majority without threshold", [*BASE, "--policy", "confident-majority"], 2,
         "needs a threshold"),
    Case("threshold with majority", [*BASE, "--threshold", "0.7"], 2, "takes no threshold"),
    Case("negative limit", [*BASE, "--limit", "-1"], 2, "--limit"),
    Case("workers that name nothing", [*BASE[:-3], "--workers", ",", J], 2, "names nothing"),
    # ------------------------------------------------------------ calibrate
    Case("target outside (0, 1)", [*CAL, "--target", "1.2"], 2, "--target must be between 0 and 1",
         after="absent:c.toml"),
    Case("margin outside [0, 1)", [*CAL, "--non-inferior", "1.5"], 2, "--non-inferior must be in",
         after="absent:c.toml"),
    Case("gold reference without gold", [*CAL, "--reference", "gold"], 2, "needs gold labels",
         after="absent:c.toml"),
    Case("non-inferior against the judge", [*CAL, "--non-inferior", "0.02", "--reference", "judge"],
         2, "use --reference gold", after="absent:c.toml"),
    Case("dataset scope against gold", [*CAL, "--reference", "gold", "--gold-column", "g"], 2,
         "use --non-inferior", files={"in.csv": CSV.replace("text\n", "text,g\n")
                                      .replace("phone\n", "phone,positive\n")
                                      .replace("ever\n", "ever,negative\n")
                                      .replace("nine\n", "nine,neutral\n")},
         after="absent:c.toml"),
    Case("too few items for any certificate", CAL, 1, "needs at least 22 calibration items",
         after="absent:c.toml"),
    # ------------------------------------------------------------ files people really have
    Case("csv with a utf-8 byte-order mark", BASE, 0, "",
         files={"in.csv": "\ufeffid,text\n1,good\n2,bad\n".encode()}, after="records:2",
         ids=["1", "2"], input_errors=[]),
    Case("semicolon-separated csv", BASE, 2, "give --delimiter ';'",
         files={"in.csv": "id;text\n1;good\n"}),
    Case("semicolon-separated csv, --delimiter ';'", [*BASE, "--delimiter", ";"], 0, "",
         files={"in.csv": "id;text\n1;good, really\n2;bad\n"}, after="records:2",
         input_errors=[]),
    Case("--delimiter on a jsonl file", [*BASE[:1], "{tmp}/in.jsonl", *BASE[2:], "--delimiter",
                                         ";"], 2, "--delimiter is for .csv and .tsv files",
         files={"in.jsonl": '{"id": "1", "text": "a"}\n'}),
    Case("--delimiter of two characters", [*BASE, "--delimiter", ";;"], 2,
         "--delimiter must be one character"),
    Case("a number and a list as jsonl texts", [*BASE[:1], "{tmp}/in.jsonl", *BASE[2:]], 0, "",
         files={"in.jsonl": '{"id": "1", "text": 5}\n{"id": "2", "text": ["a"]}\n'
                            '{"id": "3", "text": "fine"}\n'},
         after="records:3", ids=["1", "2", "3"], input_errors=["1", "2"]),
    Case("bad rows stand at their place", BASE, 0, "",
         files={"in.csv": "id,text\n1,good\n2,\n3,bad\n4,\n"}, after="records:4",
         ids=["1", "2", "3", "4"], input_errors=["2", "4"]),
    # ------------------------------------------------------------ a bad row's id
    Case("non-utf-8 row keeps its own id", BASE, 0, "",
         files={"in.csv": b"id,text\n7,caf\xe9\n8,fine\n"}, after="records:2", ids=["7", "8"],
         input_errors=["7"]),
    Case("broken line gets its row number, not a real id", [
        "classify", "{tmp}/in.jsonl", "-o", "{out}", "--id-column", "id", W, J, "-q"], 0, "",
         files={"in.jsonl": '{"id": "1", "text": "a"}\nnot json\n{"id": "2", "text": "b"}\n'
                            'nope\n'},
         after="records:4", ids=["1", "row-2", "2", "4"], input_errors=["row-2", "4"]),
    Case("a duplicate's record never reuses its id", BASE, 0, "",
         files={"in.csv": "id,text\n1,good\n1,bad\n"}, after="records:2", ids=["1", "2"],
         input_errors=["2"]),
    # ------------------------------------------------------------ portable config, messages
    Case("config names its task file relative to itself",
         ["classify", "{in}", "-o", "{out}", "--config", "{tmp}/c6/c.toml", "--id-column", "id",
          "--workers=openai:m2@{url}", J, "-q"], 0, "",
         files={"c6/c.toml": 'task = "mood.toml"\n', "c6/mood.toml": MOOD}, after="records:3"),
    Case("settings prefix said once", [*BASE[:-3], "--workers=vader,openai:m1@{url}", J], 2,
         "cannot be both a worker and the judge", unwanted="settings: settings"),
    Case("adaptive audit rate 0 names the flag", [*BASE, "--adaptive", "--audit-rate", "0"], 2,
         "--audit-rate must be between 0 and 1, both excluded, got 0"),
    Case("calibrate target 1: bounds excluded", [*CAL, "--target", "1"], 2,
         "--target must be between 0 and 1, both excluded, got 1", after="absent:c.toml"),
    Case("calibrate: one class only is warned about", CAL, 1,
         "every calibration item has the same reference label", after="absent:c.toml"),
    Case("calibrate: workers certified to decide nothing", [
        "calibrate", "{in}", "--task", "sentiment", "--id-column", "id",
        "--workers=openai:m1@{url},openai:m2@{url}", "--judge=vader", "--target", "0.7",
        "-o", "{tmp}/c.toml", "--votes", "{tmp}/v.sqlite", "-q"], 1,
         "no threshold lets the workers decide any item", files={"in.csv": MIXED},
         after="absent:c.toml"),
    Case("key in a url is not echoed", [*BASE[:-3], "--workers=openai:m@https://u:sk-abcdef0123456789xyz@h",
                                        J], 2, "***"),
]


def _fill(s: str, tmp: Path, url: str) -> str:
    return (s.replace("{in}", str(tmp / "in.csv")).replace("{out}", str(tmp / "out.jsonl"))
            .replace("{url}", url).replace("{tmp}", str(tmp)))


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, BaseException | None]:
    res = CliRunner().invoke(app, args, env=env)
    return res.exit_code, res.output, res.exception


def _records(path: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if "speculabel" not in r]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = fake
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path / "cache"))
    (tmp_path / "in.csv").write_text(CSV)
    for name, content in case.files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    env = {k: _fill(v, tmp_path, url) for k, v in case.env.items()}
    out = tmp_path / "out.jsonl"
    if case.first is not None:
        code, text, _ = _run([_fill(a, tmp_path, url) for a in case.first], env)
        assert code == 0, text
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with contextlib.ExitStack() as stack:
        if case.held:
            from speculabel.io.lock import OutputLock

            stack.enter_context(OutputLock(tmp_path / case.held))
        code, text, exc = _run([_fill(a, tmp_path, url) for a in case.args], env)
    assert "Traceback" not in text
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    assert code == case.code, text
    assert case.phrase.lower() in text.lower(), text
    assert not case.unwanted or case.unwanted not in text, text
    if case.after.startswith("absent:"):
        assert not (tmp_path / case.after.split(":")[1]).exists()
    elif case.after == "absent":  # not even a 0-byte file, nor its settings
        assert not out.exists() and not (tmp_path / "out.jsonl.meta.json").exists()
    elif case.after == "empty":
        assert not out.exists() or out.read_text() == ""
    elif case.after == "unchanged":
        assert out.read_bytes() == before["out.jsonl"]
    elif case.after.endswith(" unchanged"):
        name = case.after.split()[0]
        assert (tmp_path / name).read_bytes() == before[name]
    else:
        n = int(case.after.split(":")[1])
        recs = _records(out)
        assert len(recs) == n, recs
        ids = [r["id"] for r in recs if r["id"] is not None]
        assert len(ids) == len(set(ids))
        if case.ids is not None:
            assert [r["id"] for r in recs] == case.ids, recs
        if case.input_errors is not None:
            bad = [r["id"] for r in recs if r.get("error_kind") == "input"]
            assert bad == case.input_errors, recs
        again, text2, _ = _run([_fill(a, tmp_path, url) for a in case.args], env)
        assert again == 0 and "nothing to do" in text2, text2  # nothing is done twice


def test_help_shows_defaults_and_every_option_has_help() -> None:
    for command in ("classify", "calibrate"):
        res = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert res.exit_code == 0
        assert "[default: " in res.output and "model specs ." not in res.output, res.output
    res = CliRunner().invoke(app, ["classify", "--help"], terminal_width=200)
    assert "gemma3-270m,qwen2.5-0.5b" in res.output and "--threshold" in res.output
    res = CliRunner().invoke(app, ["calibrate", "--help"], terminal_width=200)
    assert "No progress bar" in res.output  # --quiet explains itself


def test_a_server_error_that_echoes_the_key_never_reaches_the_results(
    tmp_path: Path, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    f, url = fake
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MY_KEY", "sk-verysecretkey1234567890")
    (tmp_path / "in.csv").write_text(CSV)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models."openai:m1@{url}"]\napi_key_env = "MY_KEY"\n')
    f.status = [400] * 10
    f.error_body = "bad request; headers were Authorization: Bearer sk-verysecretkey1234567890"
    code, text, _ = _run([_fill(a, tmp_path, url) for a in BASE] + ["--config", str(cfg),
                                                                     "--no-votes"], {})
    assert code == 0, text
    blob = (tmp_path / "out.jsonl").read_text()
    assert "verysecret" not in blob and "verysecret" not in text
    assert "judge abstained" in blob and "***" in blob


@contextlib.contextmanager
def _busy_cpus(n: int = 2) -> Iterator[None]:
    """Every core busy (a loaded machine is where a stop used to take 15 s)."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in loops:
            p.kill()
            p.wait()


@pytest.mark.parametrize(("sig", "status", "said"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_saves_what_is_done_and_says_how_to_resume(
    tmp_path: Path, fake: Any, sig: int, status: int, said: str
) -> None:
    f, url = fake
    f.delay_s = 0.3  # a slow judge: the run is still going when Ctrl-C comes
    rows = "".join(f"{i},{'neutral fact number ' + str(i)}\n" for i in range(40))
    (tmp_path / "in.csv").write_text("id,text\n" + rows)
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "speculabel", *[_fill(a, tmp_path, url) for a in BASE],
            "--batch-size", "2", "--no-votes"]
    env = {**os.environ, "SPECULABEL_HOME": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    with _busy_cpus():
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        wait_until(proc, lambda: out.exists() and len(out.read_text().splitlines()) >= 3,
                   "two records written", timeout=120, poll=0.05)
        proc.send_signal(sig)
        t0 = time.time()
        _, err = proc.communicate(timeout=60)
        took = time.time() - t0
    assert proc.returncode == status, err
    assert took < 5, f"the run took {took:.1f} s to stop"
    assert said in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    done = _records(out)
    assert 2 <= len(done) < 40
    saved = re.search(r"(\d+) records? written in this run are saved", err)
    assert saved and int(saved.group(1)) == len(done), err  # the count is what the file holds
    f.delay_s = 0.0
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ids = [r["id"] for r in _records(out)]
    assert sorted(ids, key=int) == [str(i) for i in range(40)]  # every row exactly once
