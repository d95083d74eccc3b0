"""What the Ray engine costs on one machine, and what a cluster would do (docs/scale.md).

:func:`measure_overhead` runs the same cascade on the same TweetEval items twice, in this process
(the single-process engine) and on Ray (a local instance, or ``address``), without a vote store,
so both pay for every vote; it reports wall time, items per second, the ratio, whether the labels
agree, and the per-model seconds per item the single-process run measured.

:func:`items_per_hour` turns per-model rates into a cluster's throughput: each item costs every
worker one call and the judge one call with probability ``judge_rate``, so a device spends
``sum(share / rate)`` seconds per item; with replicas placed on whole devices the slowest model
sets the pace (:func:`best_allocation` finds the placement that is fastest).
"""

from __future__ import annotations

import csv
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def measure_overhead(
    n: int,
    work_dir: Path,
    *,
    workers: list[str],
    judge: str,
    policy: str = "majority",
    threshold: float | None = None,
    batch_size: int = 8,
    address: str | None = None,
    settings: Any = None,
    say: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Single process against Ray on the first ``n`` TweetEval test tweets (see the module
    docstring); ``work_dir`` gets the input CSV and the Ray run's results directory."""
    from speculabel.cascade.build import build_cascade
    from speculabel.cascade.config import make_config
    from speculabel.io.datasets import tweeteval
    from speculabel.io.results import RunInfo
    from speculabel.scale.ray_engine import classify_to_shards, ensure_ray
    from speculabel.scale.settings import RaySettings
    from speculabel.scale.shards import ShardDir

    data = tweeteval("test", limit=n)
    work_dir.mkdir(parents=True, exist_ok=True)
    source = work_dir / f"tweets-{n}.csv"
    with source.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([it.id, it.fields["text"]] for it in data.items)
    cfg = make_config({"task": "sentiment", "workers": workers, "judge": judge, "policy": policy,
                       "threshold": threshold, "batch_size": batch_size})
    out: dict[str, Any] = {"items": n, "cpus": os.cpu_count(), "settings": cfg.decision_settings(),
                           "batch_size": batch_size}

    if _loadavg() > 0.5:
        say(f"warning: load average {_loadavg()}: another job shares the cores, so these "
            "timings measure that job too; rerun on a quiet machine")
    say(f"single process: {n} items (load average {_loadavg()})")
    out["local"] = {"load_average_before": _loadavg()}
    t0 = time.perf_counter()
    cascade = build_cascade(cfg)
    t1 = time.perf_counter()
    try:
        records = cascade.classify(data.items)
    finally:
        cascade.close()
    t2 = time.perf_counter()
    out["local"].update(load_s=round(t1 - t0, 2), classify_s=round(t2 - t1, 2),
                        total_s=round(t2 - t0, 2), items_per_s=round(n / (t2 - t0), 3),
                        judge_call_rate=round(cascade.stats.judge_rate, 4))
    out["per_model_s"] = per_model_seconds([r.to_json() for r in records])

    say(f"ray: {n} items (load average {_loadavg()})")
    out["ray"] = {"load_average_before": _loadavg()}
    settings = settings or RaySettings()
    t0 = time.perf_counter()
    started = ensure_ray(address or settings.address)
    t1 = time.perf_counter()
    try:
        results = work_dir / f"ray-out-{n}-{int(time.time())}"
        shards = ShardDir(str(results), RunInfo(settings=cfg.decision_settings(),
                                                input={"path": str(source)}))
        run = classify_to_shards(str(source), shards, cfg, cascade.task, id_column="id",
                                 columns={}, settings=settings)
        t2 = time.perf_counter()
        ours = {r.id: r.label for r in shards.records()}
    finally:
        if started:
            import ray

            ray.shutdown()
    out["ray"].update(init_s=round(t1 - t0, 2), run_s=round(t2 - t1, 2), total_s=round(t2 - t0, 2),
                      items_per_s=round(n / (t2 - t0), 3),
                      judge_call_rate=round(run.stats.judge_rate, 4), shards=run.shards,
                      results=str(results))
    out["ray_over_local_time"] = round(out["ray"]["total_s"] / out["local"]["total_s"], 3)
    out["same_labels"] = round(sum(ours.get(r.id) == r.label for r in records) / n, 4)
    return out


def per_model_seconds(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per item of each model, from the votes of a run without a vote store."""
    sums: dict[str, list[float]] = {}
    for rec in records:
        for vote in [*rec.get("votes", []), rec.get("judge_vote")]:
            if vote and not vote.get("cached") and vote.get("label") is not None:
                sums.setdefault(vote["model"], []).append(float(vote["latency_s"]))
    return {m: round(sum(v) / len(v), 5) for m, v in sums.items()}


# ---------------------------------------------------------------------- a cluster's throughput
@dataclass(frozen=True)
class ModelRate:
    """A model's sustained rate, items per second on ``devices`` devices (one replica), and the
    share of items it sees (1 for a worker, the judge-call rate for the judge)."""

    name: str
    items_per_s: float
    devices: int = 1
    share: float = 1.0


def items_per_hour(models: list[ModelRate], nodes: int, devices_per_node: int,
                   replicas: dict[str, int] | None = None) -> float:
    """Items per hour on ``nodes`` identical nodes.

    ``replicas`` (per node) places whole replicas: the slowest model (replicas x rate / share)
    sets the pace.  Without it every model gets exactly the device time its load needs (an
    upper bound: devices shared in proportion).
    """
    if replicas is None:
        seconds = sum(m.share * m.devices / m.items_per_s for m in models)  # device-s per item
        return 3600.0 * nodes * devices_per_node / seconds
    used = sum(replicas.get(m.name, 0) * m.devices for m in models)
    if used > devices_per_node:
        raise ValueError(f"the replicas need {used} devices, a node has {devices_per_node}")
    per_node = min(replicas.get(m.name, 0) * m.items_per_s / m.share if m.share else float("inf")
                   for m in models)
    return 3600.0 * nodes * per_node


def best_allocation(models: list[ModelRate], devices_per_node: int) -> dict[str, int]:
    """The whole-replica placement on one node with the most items per hour (every model at
    least one replica; exhaustive, fine for a handful of models and devices)."""
    best: dict[str, int] = {}
    best_rate = -1.0
    ranges = [range(1, devices_per_node // m.devices + 1) for m in models]
    for combo in itertools.product(*ranges):
        alloc = {m.name: k for m, k in zip(models, combo, strict=True)}
        if sum(k * m.devices for m, k in zip(models, combo, strict=True)) > devices_per_node:
            continue
        rate = items_per_hour(models, 1, devices_per_node, alloc)
        if rate > best_rate:
            best, best_rate = alloc, rate
    return best


def measured_setup(per_model_s: dict[str, float], judge: str, judge_rate: float) -> list[ModelRate]:
    """This machine's models at the rates a single-process run measured (seconds per item, all
    cores each), as one "device" per node: nodes like this one, models sharing its cores."""
    return [ModelRate(m, 1.0 / s, 1, judge_rate if m == judge else 1.0)
            for m, s in per_model_s.items() if s > 0]


def paper_setup(judge_rate: float, worker_rate: float = 700.0, judge_rate_per_replica: float = 190.0,
                judge_devices: int = 2) -> list[ModelRate]:
    """The paper's setup: three 3B workers and a 32B-class judge behind vLLM (rates per replica,
    items per second; the assumptions behind the defaults are in docs/scale.md)."""
    workers = [ModelRate(f"worker-3b-{i}", worker_rate) for i in (1, 2, 3)]
    return [*workers, ModelRate("judge-32b", judge_rate_per_replica, judge_devices, judge_rate)]


def cluster_table(models: list[ModelRate], devices_per_node: int,
                  nodes: tuple[int, ...] = (1, 2, 4, 8, 16)) -> list[dict[str, Any]]:
    """Items per hour on N nodes: proportional sharing (upper bound) and the best placement."""
    alloc = best_allocation(models, devices_per_node)
    return [{"nodes": k,
             "items_per_hour_bound": round(items_per_hour(models, k, devices_per_node)),
             "items_per_hour_placed": round(items_per_hour(models, k, devices_per_node, alloc)),
             "placement": alloc} for k in nodes]


def nodes_like_this_one(measured: dict[str, Any], judge: str,
                        nodes: tuple[int, ...] = (1, 2, 4, 8, 16)) -> list[dict[str, Any]]:
    """Items per hour on N machines like this one, from the single-process run's per-model
    seconds and judge-call rate (one process per node)."""
    models = measured_setup(measured["per_model_s"], judge, measured["local"]["judge_call_rate"])
    return [{"nodes": k, "items_per_hour": round(items_per_hour(models, k, 1))} for k in nodes]


def paper_cluster(judge_rates: list[float], worker_rate: float, judge_replica_rate: float,
                  judge_gpus: int, gpus_per_node: int) -> dict[str, Any]:
    """Items per hour on N GPU nodes for the paper's setup at each judge-call rate, and for the
    judge alone (the rates are assumptions: see docs/scale.md)."""
    by_rate: dict[str, Any] = {}
    for rate in judge_rates:
        models = paper_setup(rate, worker_rate, judge_replica_rate, judge_gpus)
        by_rate[str(rate)] = cluster_table(models, gpus_per_node)
    judge_alone = paper_setup(1.0, worker_rate, judge_replica_rate, judge_gpus)[-1:]
    by_rate["judge alone"] = cluster_table(judge_alone, gpus_per_node)
    return {"gpus_per_node": gpus_per_node, "worker_rate": worker_rate,
            "judge_replica_rate": judge_replica_rate, "judge_gpus": judge_gpus,
            "by_judge_rate": by_rate}
