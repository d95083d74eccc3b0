"""The load benchmark of ``speculabel serve`` (``make bench-serve``).

The same items two ways, with the same models: (1) the batch path, ``Cascade.classify(items)``
in this process; (2) ``speculabel serve`` in a subprocess (its own copy of the models) and N
concurrent HTTP clients, each sending R requests of K items one after another.  Reported per
repeat and as medians over repeats (the two paths alternate, so a load spike on a shared
machine hits both): items/s of each, their ratio, request latency p50 / p95.  No vote store on
either path, so no vote is ever served from a cache.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend
from speculabel.records import Item, Vote
from speculabel.tasks import Task

#: the simulated models' specs and costs (ms per call, ms per item): two workers, one judge
SIMULATED = {"sim:a": (5.0, 2.0), "sim:b": (5.0, 2.0), "sim:judge": (10.0, 10.0)}


class Simulated(Backend):
    """A model whose cost is a sleep (``call_ms`` per call plus ``item_ms`` per item: a batch
    is cheaper than its items one by one, as with a real model) and whose label is a hash of
    the text (``sim:b`` differs from ``sim:a`` on about 30 % of the texts, so those go to the
    judge).  It measures what the service adds to a model's cost, not a model: on a shared
    machine a sleep costs the same whatever the other processes do."""

    def __init__(self, spec: str, call_ms: float = 5.0, item_ms: float = 2.0) -> None:
        self.spec, self.call_s, self.item_s = spec, call_ms / 1000, item_ms / 1000

    def fingerprint(self) -> str:
        return f"sim:{self.spec}:{self.call_s}:{self.item_s}"

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        import zlib

        time.sleep(self.call_s + self.item_s * len(items))
        labels = task.label_names
        out = []
        for it in items:
            h = zlib.crc32("\x1f".join(it.fields.values()).encode())
            k = h % len(labels)
            if (self.spec == "sim:b" and (h >> 8) % 10 < 3) or (self.spec == "sim:judge" and (h >> 8) % 10 < 1):
                k = (k + 1) % len(labels)
            probs = {lab: (0.8 if i == k else 0.2 / (len(labels) - 1)) for i, lab in enumerate(labels)}
            out.append(Vote.from_probs(self.spec, probs, latency_s=self.item_s, method="classifier"))
        return out


def simulated(spec: str, **options: Any) -> Simulated:
    """The entry-point factory of the ``sim`` kind (registered by :func:`register_simulated`)."""
    return Simulated(spec, **options)


def register_simulated(where: Path) -> Path:
    """A distribution in ``where`` registering the ``sim`` kind (entry point group
    ``speculabel.backends``), put on this process's path; return ``where`` for a subprocess's
    ``PYTHONPATH``."""
    d = where / "speculabel_bench_sim-0.1.dist-info"
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text("Metadata-Version: 2.1\nName: speculabel-bench-sim\nVersion: 0.1\n")
    (d / "entry_points.txt").write_text(f"[speculabel.backends]\nsim = {__name__}:simulated\n")
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    return where


def simulated_config(task: str, batch_size: int) -> dict[str, Any]:
    """Config data of the simulated cascade (``sim:a``, ``sim:b``, judge ``sim:judge``)."""
    return {"task": task, "workers": ["sim:a", "sim:b"], "judge": "sim:judge",
            "policy": "majority", "batch_size": batch_size,
            "models": {spec: {"call_ms": c, "item_ms": i} for spec, (c, i) in SIMULATED.items()}}


def load_items(source: str, n: int) -> tuple[list[Item], str]:
    """``n`` sentiment items: the first TweetEval test tweets when the shared data is there,
    else the built-in demo reviews repeated (ids kept distinct); and where they came from."""
    if source == "tweeteval":
        try:
            from speculabel.io.datasets import tweeteval

            data = tweeteval("test", limit=n)
            if len(data.items) >= n:
                return [Item(f"t{i}", dict(it.fields)) for i, it in enumerate(data.items[:n])], \
                    f"TweetEval test, first {n}"
        except Exception:  # no shared data here: the built-in sample below
            pass
    import json
    from importlib.resources import files

    rows = [json.loads(x) for x in files("speculabel").joinpath("data/demo_sentiment.jsonl")
            .read_text(encoding="utf-8").splitlines() if x.strip()]
    return [Item(f"d{i}", {"text": rows[i % len(rows)]["text"]}) for i in range(n)], \
        f"built-in demo reviews ({len(rows)}) repeated to {n}"


def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else 0.0


def start_server(config: Path, port: int, log: Path, max_wait_ms: float,
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``speculabel serve`` in a subprocess; returns once /healthz says ready."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "speculabel", "serve", "--config", str(config), "--port",
         str(port), "--log", str(log), "--max-wait-ms", str(max_wait_ms), "--quiet"],
        env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"speculabel serve ended: {(proc.communicate()[1] or '')[-1500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("speculabel serve was not ready after 600 s")


def load_clients(url: str, items: list[Item], clients: int, requests: int,
                 per_request: int) -> dict[str, Any]:
    """N clients, each sending its R requests of K items one after another; wall time, every
    request's latency, and whether every answer came back whole and in order."""
    import httpx

    latencies: list[float] = []
    wrong: list[str] = []
    lock = threading.Lock()

    def run(c: int) -> None:
        with httpx.Client(timeout=600) as http:
            for r in range(requests):
                start = (c * requests + r) * per_request
                chunk = items[start:start + per_request]
                body = {"items": [{"id": it.id, **it.fields} for it in chunk]}
                t0 = time.perf_counter()
                resp = http.post(f"{url}/v1/classify", json=body)
                dt = time.perf_counter() - t0
                ok = resp.status_code == 200 and [x["id"] for x in resp.json()["records"]] == \
                    [it.id for it in chunk]
                with lock:
                    latencies.append(dt)
                    if not ok:
                        wrong.append(f"client {c} request {r}: {resp.status_code}")

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall_s": time.perf_counter() - t0, "latencies": latencies, "wrong": wrong}


def run_bench(cfg: Any, *, clients: int = 8, requests: int = 10, per_request: int = 5,
              repeats: int = 3, max_wait_ms: float = 10.0, source: str = "tweeteval",
              env: dict[str, str] | None = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Batch ``classify`` against the service on the same items (see the module docstring)."""
    from speculabel.backends.openai.local_server import free_port
    from speculabel.cascade.build import build_cascade
    from speculabel.cascade.config import save_config
    from speculabel.tasks import load_task

    n = clients * requests * per_request
    items, where = load_items(source, n)
    task = load_task(cfg.task)
    say(f"{n} items ({where}); loading the cascade in this process")
    cascade = build_cascade(cfg, task=task)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        config = save_config(cfg, Path(tmp) / "cascade.toml")
        port = free_port()
        say("starting speculabel serve")
        proc = start_server(config, port, Path(tmp) / "serve.log.jsonl", max_wait_ms, env)
        url = f"http://127.0.0.1:{port}"
        try:
            cascade.classify(items[:per_request])  # warm both paths up on a few items
            load_clients(url, items[:per_request], 1, 1, per_request)
            for rep in range(repeats):
                t0 = time.perf_counter()
                records = cascade.classify(items)
                batch_s = time.perf_counter() - t0
                judge_rate = sum(r.decided_by == "judge" for r in records) / len(records)
                load = load_clients(url, items, clients, requests, per_request)
                if load["wrong"]:
                    raise RuntimeError(f"wrong answers: {load['wrong'][:3]}")
                row = {"repeat": rep, "batch_items_per_s": n / batch_s,
                       "serve_items_per_s": n / load["wall_s"],
                       "ratio": batch_s / load["wall_s"],
                       "p50_latency_s": percentile(load["latencies"], 50),
                       "p95_latency_s": percentile(load["latencies"], 95),
                       "batch_judge_rate": judge_rate}
                rows.append(row)
                say(f"repeat {rep + 1}/{repeats}: batch {row['batch_items_per_s']:.3g} items/s, "
                    f"serve {row['serve_items_per_s']:.3g} items/s (ratio {row['ratio']:.2f}), "
                    f"p50 {row['p50_latency_s']:.3f} s, p95 {row['p95_latency_s']:.3f} s")
        finally:
            proc.terminate()
            code = proc.wait(120)
            for b in [*cascade.workers, *([cascade.judge] if cascade.judge else [])]:
                b.close()
        if code != 0:
            raise RuntimeError(f"speculabel serve exited {code} after SIGTERM")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "repeat"}
    return {"items": n, "source": where, "clients": clients, "requests_per_client": requests,
            "items_per_request": per_request, "repeats": repeats, "max_wait_ms": max_wait_ms,
            "task": cfg.task, "workers": list(cfg.workers), "judge": cfg.judge,
            "batch_size": cfg.batch_size, "simulated": cfg.workers == ["sim:a", "sim:b"],
            "rows": rows, "median": med,
            "goal_ratio": 0.8, "goal_met": med["ratio"] >= 0.8}


def print_table(result: dict[str, Any]) -> None:
    m = result["median"]
    print(f"\nspeculabel serve vs batch classify: {result['items']} items ({result['source']}), "
          f"{result['clients']} clients x {result['requests_per_client']} requests x "
          f"{result['items_per_request']} items; workers {','.join(result['workers'])}, judge "
          f"{result['judge']}; medians of {result['repeats']} repeats")
    print("| path | items/s | p50 latency | p95 latency |")
    print("|---|---|---|---|")
    print(f"| batch Cascade.classify | {m['batch_items_per_s']:.3g} | | |")
    print(f"| speculabel serve | {m['serve_items_per_s']:.3g} | {m['p50_latency_s']:.3f} s | "
          f"{m['p95_latency_s']:.3f} s |")
    print(f"\nthroughput ratio serve / batch: {m['ratio']:.2f} (goal >= {result['goal_ratio']}: "
          f"{'met' if result['goal_met'] else 'NOT met'})")
