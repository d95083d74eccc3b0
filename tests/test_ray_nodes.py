"""Two Ray nodes on one machine (``ray.cluster_utils.Cluster``: a head and a worker node, each
its own raylet with one CPU), a cascade run across both, the worker node killed mid-run: the
run ends (or its rerun ends) with every id exactly once, and nothing written is rewritten."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import needs
from procs import wait_until
from speculabel.io.datasets import shared_data_dir

pytestmark = pytest.mark.slow

N = 40
CONFIG = """task = "sentiment"
workers = ["vader"]
judge = "smollm2-135m"
policy = "confident-majority"
threshold = 0.8
batch_size = 2
[models."smollm2-135m"]
n_threads = 1
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    needs.module("ray.data", needs.RAY)
    needs.module("vaderSentiment", needs.BENCH)
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_a_node_killed_mid_run_loses_nothing_and_duplicates_nothing(
        cluster: Any, tmp_path: Path, smollm2_path: Path) -> None:
    from speculabel.scale.shards import read_records

    d = needs.data(lambda: shared_data_dir("tweeteval-sentiment"), "tweeteval-sentiment")
    texts = (d / "val_text.txt").read_text(encoding="utf-8").splitlines()[:N]
    tweets = tmp_path / "tweets.csv"
    with tweets.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tweet_id", "tweet"])
        for i, t in enumerate(texts):
            w.writerow([f"tw{i:03d}", t])
    (tmp_path / "cascade.toml").write_text(CONFIG)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "speculabel.cli", "classify", str(tweets), "-o", str(out),
            "--config", str(tmp_path / "cascade.toml"), "--text-column", "tweet",
            "--id-column", "tweet_id", "--engine", "ray", "--address", cluster.address,
            "--shard-rows", "2", "--no-votes", "-q",
            # half a CPU each: after the kill, every actor still fits on the surviving node
            "--cpus-per-actor", "0.5", "--judge-cpus-per-actor", "0.5"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(proc, lambda: len(list(out.glob("part-*.jsonl"))) >= 2, "2 shards", poll=0.05)
    worker_node = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
    cluster.remove_node(worker_node)  # kill -9 of that node's raylet and its workers
    written = {p.name: p.read_text() for p in out.glob("part-*.jsonl")}
    assert sum(len(t.splitlines()) for t in written.values()) < N, "the kill should land mid-run"
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the run did not end after the node was killed: {err[-2000:]}")
    if proc.returncode != 0:  # the driver may stop on the loss: the rerun must finish it
        res = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    ids = [str(r.id) for r in read_records(str(out))]
    assert len(ids) == len(set(ids)) == N
    for name, text in written.items():  # what was written before the kill stands as it was
        assert (out / name).read_text() == text
