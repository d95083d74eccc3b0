"""Step 3 of a bench: run the real cascade for the chosen configurations and the judge alone on
the same items, one after the other in this process, and set measured beside computed speedup
and beside the hardware's limit (:mod:`speculabel.bench.limit`).

Measured runs are kept in ``report.json`` with a *signature* (the model files, the items and the
configurations); a later bench or report reuses them only when the signature is the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend
from speculabel.backends.capabilities import forget_caches, warm_up
from speculabel.bench.limit import config_limit, time_embedders
from speculabel.bench.manifest import Manifest
from speculabel.bench.metrics import accuracy, agreement, clean, percentile
from speculabel.bench.run import Loader, Say, _load, _quiet
from speculabel.bench.simulate import VoteTable, simulate
from speculabel.policy import policy_from_rule
from speculabel.records import Item, Vote
from speculabel.tasks import Task


def measure(
    task: Task,
    items: Sequence[Item],
    configs: Sequence[Mapping[str, Any]],
    table: VoteTable,
    *,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
    loader: Loader = _load,
    backends: Mapping[str, Backend] | None = None,
    batch_size: int = 8,
    say: Say = _quiet,
) -> dict[str, Any]:
    """Run the judge alone and each configuration's real cascade on the same items.

    ``table`` holds the stored votes of the same items (same order) for the computed numbers.
    Models are loaded once and warmed up on one item (prompt prefix evaluated) before anything
    is timed; the judge alone runs first, then each cascade, in this process, with no vote store.
    """
    from speculabel.cascade.run import Cascade

    if not configs:
        return {"skipped": "no configuration to measure", "runs": []}
    judge_spec = str(configs[0]["judge"])
    specs = list(dict.fromkeys([judge_spec, *(w for c in configs for w in c["workers"])]))
    loaded: dict[str, Backend] = {}
    load_s: dict[str, float] = {}
    owned: list[Backend] = []
    try:
        for spec in specs:
            if backends is not None and spec in backends:
                loaded[spec] = backends[spec]
                load_s[spec] = 0.0
                continue
            t0 = time.perf_counter()
            b = loader(spec)
            load_s[spec] = time.perf_counter() - t0
            loaded[spec] = b
            owned.append(b)
        warm_up(list(loaded.values()), task, items)  # prompt prefixes evaluated, outside the timings

        say(f"measuring the judge alone ({judge_spec}) on {len(items)} items")
        judge = loaded[judge_spec]
        w0, c0 = time.perf_counter(), time.process_time()
        judge_votes: list[Vote] = []
        for s in range(0, len(items), max(1, batch_size)):
            judge_votes.extend(judge.score(task, items[s : s + batch_size]))
        judge_wall, judge_cpu = time.perf_counter() - w0, time.process_time() - c0
        judge_labels = [v.label for v in judge_votes]
        stored_judge = table.labels(judge_spec)
        say(f"timing the workers' embedders on the {len(items)} items' texts (the limit)")
        embed_times = time_embedders([loaded[w] for w in specs if w != judge_spec], items)

        runs: list[dict[str, Any]] = []
        for cfg in configs:
            workers = [str(w) for w in cfg["workers"]]
            rule = str(cfg["rule"])
            early = bool(cfg["early_exit"])
            say(f"measuring cascade {'+'.join(workers)} | {rule}"
                f"{' | early exit' if early else ''} on {len(items)} items")
            cascade = Cascade(
                task, [loaded[w] for w in workers], judge, policy_from_rule(rule),
                early_exit=early, parallel_workers=False, vote_store=None,
                batch_size=batch_size,
            )
            forget_caches(loaded.values())  # the runs share loaded workers, never their embeddings
            w0, c0 = time.perf_counter(), time.process_time()
            emitted = cascade.classify(items)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            by_id = {r.id: r for r in emitted}  # worker-decided items of a batch come out first
            if len(by_id) != len(items):
                raise ValueError(f"the cascade returned {len(by_id)} records for {len(items)} "
                                 "items (item ids must be unique)")
            records = [by_id[it.id] for it in items]
            sim = simulate(table, workers, judge_spec, policy_from_rule(rule), parallel=False,
                           early_exit=early, gold=gold, labels=labels)
            final = [r.label for r in records]
            decided = [r.decided_by == "workers" for r in records]
            measured_speedup = judge_wall / wall if wall > 0 else math.nan
            measured_cpu = judge_cpu / cpu if cpu > 0 else math.nan
            run = {
                "key": sim.key,
                "workers": workers,
                "rule": rule,
                "early_exit": early,
                "items": len(items),
                "measured": {
                    "cascade_wall_s": wall,
                    "cascade_cpu_s": cpu,
                    "judge_wall_s": judge_wall,
                    "judge_cpu_s": judge_cpu,
                    "speedup": measured_speedup,
                    "cpu_speedup": measured_cpu,
                    "coverage": sum(decided) / len(decided) if decided else math.nan,
                    "e2e_agreement_with_judge": agreement(final, judge_labels),
                    "e2e_accuracy": _acc(final, gold),
                    "cascade_latency_p95_s": _p95([r.latency_s for r in records]),
                },
                "computed": {
                    "speedup": sim.speedup,
                    "cpu_speedup": sim.cpu_speedup,
                    "coverage": sim.coverage,
                    "e2e_agreement_with_judge": sim.e2e_agreement,
                    "e2e_accuracy": sim.e2e_accuracy,
                    "cascade_latency_p95_s": sim.latency_p95_s,
                },
                "same_final_label_as_computed": agreement(final, sim.final_labels),
                "same_decider_as_computed": (
                    sum(a == b for a, b in zip(decided, sim.decided, strict=True)) / len(decided)
                    if decided else math.nan
                ),
            }
            run["gap"] = {
                "speedup_rel": _rel(measured_speedup, sim.speedup),
                "cpu_speedup_rel": _rel(measured_cpu, sim.cpu_speedup),
            }
            run["limit"] = config_limit(
                workers, loaded, embed_times, table.latency, judge_wall_s=judge_wall,
                n_items=len(items), judge_calls=len(items) - sum(decided), cascade_wall_s=wall)
            runs.append(run)
        return clean({
            "items": len(items),
            "judge": judge_spec,
            "environment_after": environment(),
            "load_s": load_s,
            "judge_alone": {
                "wall_s": judge_wall,
                "cpu_s": judge_cpu,
                "agreement_with_stored_votes": agreement(judge_labels, stored_judge),
            },
            "runs": runs,
        })
    finally:
        for b in owned:
            b.close()


def _acc(pred: Sequence[str | None], gold: Sequence[str | None] | None) -> float | None:
    if gold is None or not any(g is not None for g in gold):
        return None

    return accuracy(pred, gold)


def _p95(xs: Sequence[float]) -> float:

    return percentile(xs, 95)


def _rel(measured: float, computed: float) -> float:
    """measured / computed - 1 (0.1: measured 10 % higher)."""
    if not computed or math.isnan(computed) or math.isnan(measured):
        return math.nan
    return measured / computed - 1.0


#: Bumped when the way runs are timed changes, so runs timed the old way are not reused.
MEASURE_METHOD = 2  # 2: embedding caches dropped before every timing


def measure_signature(manifest: Manifest, configs: Sequence[Mapping[str, Any]],
                      idx: Sequence[int]) -> str:
    """What a measured run depends on: the model files, the items, the configurations.  The one
    rule for reusing measured runs, in a bench and in a report redone from the store."""
    blob = json.dumps({
        "method": MEASURE_METHOD,
        "task": manifest.task_fingerprint,
        "models": sorted((m["spec"], m["fingerprint"]) for m in manifest.models),
        "items": [manifest.item_keys[i] for i in idx],
        "configs": sorted(str(c["key"]) for c in configs),
    }, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def previous_measured(out_dir: Path, signature: str) -> dict[str, Any] | None:
    """The measured runs of the last report in ``out_dir`` if their signature is this one."""
    path = out_dir / "report.json"
    try:
        prev = json.loads(path.read_text(encoding="utf-8")).get("measured") or {}
    except (OSError, ValueError):
        return None
    if prev.get("signature") == signature and prev.get("runs"):
        return dict(prev)
    return None


def environment() -> dict[str, Any]:
    """The machine the timings come from; the load average shows other work competing for it."""
    import contextlib
    import os
    import platform

    env: dict[str, Any] = {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(OSError):  # not on every platform
        env["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    try:
        from importlib.metadata import version

        env["llama_cpp_python"] = version("llama-cpp-python")
    except Exception:  # not installed: the bench may use other backends only
        env["llama_cpp_python"] = None
    return env

