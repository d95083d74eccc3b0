"""Adaptive runs with plain-Python workers and judge (pure logic; the CLI test uses real parts):
warm-up, audit, escalation, certified looks, resume."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

import needs
from speculabel.adaptive.plan import AdaptiveSettings, level, look_due, phase, planned_looks
from speculabel.adaptive.report import report, statement
from speculabel.adaptive.run import AdaptiveCascade
from speculabel.adaptive.state import AdaptiveState
from speculabel.backends.base import FunctionBackend
from speculabel.backends.learner.backend import LearnerBackend
from speculabel.io.results import ResultsFile
from speculabel.io.votes import item_key
from speculabel.records import Item
from speculabel.tasks import SENTIMENT, Task
from test_learner import WORDS, HashEmbedder

pytest_plugins = ["fake_openai"]

LABELS = SENTIMENT.label_names


def _stream(n: int, seed: int = 0) -> tuple[list[Item], dict[str, str]]:
    rng = random.Random(seed)
    items, truth = [], {}
    for i in range(n):
        lab = rng.choice(list(WORDS))
        words = rng.sample(WORDS[lab], 2) + rng.sample(WORDS["neutral"], 1)
        items.append(Item(f"s{i}", {"text": " ".join(words) + f" #{i}"}))
        truth[f"s{i}"] = lab
    return items, truth


def _judge(truth: dict[str, str], calls: list[str]) -> FunctionBackend:
    """The judge answers from the truth table (and counts its calls)."""
    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        calls.extend(it.id for it in items)
        return [{x: (0.9 if x == truth[it.id] else 0.05) for x in LABELS} for it in items]

    return FunctionBackend("judge", fn)


def _lexicon() -> FunctionBackend:
    """A cheap worker that knows the words (right but not always sure)."""
    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        out = []
        for it in items:
            words = it.fields["text"].split()
            hits = {lab: sum(w in WORDS[lab] for w in words) for lab in ("positive", "negative")}
            best = max(hits, key=lambda k: hits[k])
            lab = best if hits[best] else "neutral"
            out.append({x: (0.7 if x == lab else 0.15) for x in LABELS})
        return out

    return FunctionBackend("lexicon", fn)


def _run(tmp: Path, items: list[Item], truth: dict[str, str], s: AdaptiveSettings,
         calls: list[str], stop_after: int | None = None) -> tuple[ResultsFile, AdaptiveState]:
    from speculabel.adaptive.plan import order

    state = AdaptiveState.open(tmp / "out.jsonl.adaptive", s, len(items))
    learner = LearnerBackend(embedder=HashEmbedder(), directory=state.learner_dir("learner:minilm"),
                             min_per_class=5)
    cascade = AdaptiveCascade(SENTIMENT, [_lexicon(), learner], _judge(truth, calls), state,
                              batch_size=10)
    results = ResultsFile(tmp / "out.jsonl")
    perm = order([item_key(SENTIMENT, it) for it in items], s.seed)
    todo = [(p, items[j]) for p, j in enumerate(perm) if items[j].id not in results]
    for k, rec in enumerate(cascade.run(todo, len(items) - len(todo))):
        results.write(rec)
        if stop_after is not None and k + 1 >= stop_after:
            break
    cascade.close()
    results.close()
    return results, state


def test_plan_is_a_function_of_settings_and_item() -> None:
    s = AdaptiveSettings(warmup=100, audit_rate=0.1, recertify_every=200)
    assert phase(s, 5, "k") == phase(s, 5, "k") and phase(s, 5, "k").startswith("warmup")
    later = [phase(s, 500, f"k{i}") for i in range(2000)]
    assert 0.07 < later.count("audit") / 2000 < 0.13 and set(later) == {"audit", "run"}
    assert planned_looks(s, 1000) == 5 and look_due(s, 99) is None  # at 100, 300, ..., 900
    assert look_due(s, 100) == 1 and look_due(s, 299) == 1 and look_due(s, 300) == 2


def test_delta_is_spent_over_the_planned_looks_by_the_items_left() -> None:
    """The levels sum to delta (the union bound), fall look by look, and a look with no item
    left after it is not planned (its level is 0)."""
    s = AdaptiveSettings(delta=0.1, warmup=200, recertify_every=500)
    levels = [level(s, 1000, k) for k in (1, 2, 3)]
    assert levels[2] == 0.0 and abs(sum(levels) - 0.1) < 1e-12
    assert abs(levels[0] - 0.1 * 800 / 1100) < 1e-12 and levels[0] > levels[1] > 0
    assert level(s, 150, 1) == 0.1 and planned_looks(s, 150) == 1


def test_an_adaptive_run_learns_certifies_and_saves_judge_calls(tmp_path: Path) -> None:
    items, truth = _stream(1500)
    calls: list[str] = []
    s = AdaptiveSettings(target=0.9, delta=0.1, warmup=150, audit_rate=0.1, recertify_every=250)
    results, state = _run(tmp_path, items, truth, s, calls)
    recs = list(results.done.values())
    assert len(recs) == 1500 and len(calls) == len(set(calls))  # no item twice, no label twice
    assert state.certified_looks, [lk.message for lk in state.looks]
    assert state.threshold is not None
    judge_rate = sum(r.decided_by == "judge" for r in recs) / 1500
    assert judge_rate < 0.6
    # every audited item went to the judge and carries its label; audits never trained
    audited = [r for r in recs if r.rule.endswith("audit")]
    assert audited and all(r.decided_by == "judge" and r.label == truth[r.id] for r in audited)
    assert len(state.audits) == len(audited)
    trained = {r.id for r in recs if r.rule.split(": ")[-1] == "warm-up" or "escalated" in r.rule}
    assert not trained & {a.id for a in state.audits.values()}
    agree = sum(r.label == truth[r.id] for r in recs) / 1500
    assert agree >= 0.9
    from speculabel.adaptive.plan import order

    perm = order([item_key(SENTIMENT, it) for it in items], s.seed)
    data = report(state, recs, {items[j].id: p for p, j in enumerate(perm)}, window=150)
    assert data["windows"][0]["judge_call_rate"] == 1.0  # the warm-up
    assert "whole-data-set agreement with the judge >= 0.9" in statement(state)


def test_a_killed_run_resumes_with_its_state_and_pays_no_label_twice(tmp_path: Path) -> None:
    items, truth = _stream(900, seed=3)
    s = AdaptiveSettings(target=0.85, warmup=120, audit_rate=0.1, recertify_every=200)
    calls: list[str] = []
    _, first = _run(tmp_path, items, truth, s, calls, stop_after=500)
    looks_before, threshold = len(first.looks), first.threshold
    again = AdaptiveState.open(tmp_path / "out.jsonl.adaptive", s, len(items))
    assert len(again.looks) == looks_before and again.threshold == threshold
    assert len(again.audits) == len(first.audits)
    results, _state = _run(tmp_path, items, truth, s, calls)
    ids = [r.id for r in results.done.values()]
    assert sorted(ids) == sorted(it.id for it in items)
    # the judge was asked about each item at most once over both runs
    assert len(calls) == len(set(calls))
    with pytest.raises(ValueError, match="other settings"):
        AdaptiveState.open(tmp_path / "out.jsonl.adaptive",
                           AdaptiveSettings(target=0.95, warmup=120), len(items))


# --------------------------------------------------------------------------- the command


def _judge_rule(prompt: str) -> dict[str, float]:
    """The fake endpoint as a judge that reads the words (positive / negative / neutral)."""
    words = prompt.lower().split()
    pos = sum(w in WORDS["positive"] for w in words)
    neg = sum(w in WORDS["negative"] for w in words)
    lab = "positive" if pos > neg else "negative" if neg > pos else "neutral"
    return {x: (-0.1 if x == lab else -3.0) for x in LABELS}


@pytest.mark.slow
def test_classify_adaptive_runs_resumes_after_kill_and_certifies(
    tmp_path: Path, fake: object
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    from procs import wait_until

    needs.module("sentence_transformers", needs.EMBED)
    f, url = fake  # type: ignore[misc]
    f.top_for = _judge_rule
    items, _ = _stream(1500, seed=7)
    inp = tmp_path / "tweets.csv"
    import csv

    with inp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for it in items:
            w.writerow([it.id, it.fields["text"]])
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "speculabel", "classify", str(inp), "-o", str(out),
            "--text-column", "text", "--id-column", "id", "--workers", "vader,learner:minilm",
            "--judge", f"openai:m1@{url}", "--adaptive", "--adaptive-method", "stream",
            "--target", "0.9", "--warmup", "150",
            "--audit-rate", "0.1", "--recertify-every", "300", "-q"]
    env = {**os.environ, "SPECULABEL_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(proc, lambda: out.exists() and len(out.read_text().splitlines()) > 500,
               "500 records")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [r for r in map(json.loads, out.read_text().splitlines()) if "speculabel" not in r]
    requests_before = len(f.requests)
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "certified: whole-data-set agreement with the judge >= 0.9" in res.stderr
    recs = [r for r in map(json.loads, out.read_text().splitlines()) if "speculabel" not in r]
    assert sorted(r["id"] for r in recs) == sorted(it.id for it in items)  # each exactly once
    assert recs[: len(first)] == first
    report = json.loads((tmp_path / "out.jsonl.adaptive.json").read_text())
    assert report["judge_call_rate"] < 0.7 and report["looks"]
    assert report["windows"][0]["warmup"] == pytest.approx(150 / 250)  # the warm-up
    judge_truth = {it.id: max(_judge_rule(it.fields["text"]).items(), key=lambda kv: kv[1])[0]
                   for it in items}
    agree = sum(r["label"] == judge_truth[r["id"]] for r in recs) / len(recs)
    assert agree >= 0.9
    # the rerun asked the judge about no item the first run had decided (the vote store)
    asked = {m["messages"][-1]["content"] for m in f.requests[requests_before:]
             if m.get("messages")}
    done_texts = {f"Message: {it.fields['text']}" for it in items
                  if it.id in {r["id"] for r in first}}
    assert not asked & done_texts


@pytest.mark.slow
def test_classify_adaptive_rank_resumes_after_kill_and_certifies_the_file(
    tmp_path: Path, fake: object
) -> None:
    """The default adaptive method on a file: fit, rank, certify a cut, judge the rest; real
    vader and MiniLM workers, the judge an OpenAI-compatible endpoint."""
    import csv
    import json
    import os
    import signal
    import subprocess
    import sys

    from procs import wait_until

    needs.module("sentence_transformers", needs.EMBED)
    f, url = fake  # type: ignore[misc]
    f.top_for = _judge_rule
    items, _ = _stream(1500, seed=8)
    inp = tmp_path / "tweets.csv"
    with inp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for it in items:
            w.writerow([it.id, it.fields["text"]])
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "speculabel", "classify", str(inp), "-o", str(out),
            "--text-column", "text", "--id-column", "id", "--workers", "vader,learner:minilm",
            "--judge", f"openai:m1@{url}", "--adaptive", "--target", "0.9", "-q"]
    env = {**os.environ, "SPECULABEL_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(proc, lambda: out.exists() and len(out.read_text().splitlines()) > 400,
               "400 records")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [r for r in map(json.loads, out.read_text().splitlines()) if "speculabel" not in r]
    state = json.loads((tmp_path / "out.jsonl.adaptive" / "finite.json").read_text())
    assert len(state["fit_ids"]) == 150 and state["certificate"] is not None
    requests_before = len(f.requests)
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert ("certified: whole-data-set agreement with the judge over these 1500 items >= 0.9"
            in res.stderr)
    recs = [r for r in map(json.loads, out.read_text().splitlines()) if "speculabel" not in r]
    assert sorted(r["id"] for r in recs) == sorted(it.id for it in items)  # each exactly once
    assert recs[: len(first)] == first
    report = json.loads((tmp_path / "out.jsonl.adaptive.json").read_text())
    assert report["method"] == "rank" and report["judge_call_rate"] < 0.7
    assert sum(r["decided_by"] == "workers" for r in recs) == report["items"] - report[
        "judge_calls"]
    judge_truth = {it.id: max(_judge_rule(it.fields["text"]).items(), key=lambda kv: kv[1])[0]
                   for it in items}
    agree = sum(r["label"] == judge_truth[r["id"]] for r in recs) / len(recs)
    assert agree >= 0.9
    # the rerun asked the judge about no item whose label the first run had bought
    asked = {m["messages"][-1]["content"] for m in f.requests[requests_before:]
             if m.get("messages")}
    bought = {f"Message: {it.fields['text']}" for it in items if it.id in state["votes"]}
    assert not asked & bought
