"""The cascade with workers behind llama.cpp servers against the same cascade in-process.

On N TweetEval validation tweets:

1. exactness: each worker model's HTTP votes against its in-process votes (same GGUF file):
   label agreement and the largest absolute probability difference;
2. throughput: the cascade (HTTP workers smollm2-135m and qwen2.5-0.5b, one server per model,
   in-process judge) with 1, 4 and 16 requests in flight per endpoint, and the same cascade
   with in-process workers: items per second and the judge-call rate;
3. recovery: the judge's server is killed in the middle of a CLI run (workers and judge over
   HTTP); the run ends with the judge's items undecided; the server is restarted and the same
   command is run again.  Reports how long each phase took and checks that every item is in the
   output exactly once.

``scripts/http_throughput.py`` runs it and writes the JSON.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend
from speculabel.backends.openai.local_server import LlamaServer
from speculabel.backends.registry import load_backend
from speculabel.cascade.run import Cascade
from speculabel.io.datasets import tweeteval
from speculabel.models import is_installed, model_path
from speculabel.policy import make_policy
from speculabel.records import Item
from speculabel.tasks import SENTIMENT

WORKERS = ("smollm2-135m", "qwen2.5-0.5b")


def compare(http: Backend, local: Backend, items: list[Item]) -> dict[str, Any]:
    t0 = time.perf_counter()
    hv = http.score(SENTIMENT, items)
    t_http = time.perf_counter() - t0
    t0 = time.perf_counter()
    lv = local.score(SENTIMENT, items)
    t_local = time.perf_counter() - t0
    diffs = [
        abs(h.probs.get(k, 0.0) - loc.probs.get(k, 0.0))
        for h, loc in zip(hv, lv, strict=True)
        if h.label is not None and loc.label is not None
        for k in SENTIMENT.label_names
    ]
    return {
        "items": len(items),
        "http_abstentions": sum(v.label is None for v in hv),
        "label_agreement": sum(h.label == loc.label for h, loc in zip(hv, lv, strict=True)) / len(items),
        "max_abs_prob_diff": max(diffs) if diffs else None,
        "mean_abs_prob_diff": sum(diffs) / len(diffs) if diffs else None,
        "http_s": round(t_http, 2),
        "in_process_s": round(t_local, 2),
        "methods": sorted({v.method for v in hv}),
        "abstention_reasons": sorted({(v.error or "")[:160] for v in hv if v.label is None})[:3],
    }


def run_cascade(workers: list[Backend], judge: Backend, items: list[Item], batch: int) -> dict[str, Any]:
    cascade = Cascade(SENTIMENT, workers, judge, make_policy("majority"), parallel_workers=True, batch_size=batch)
    t0 = time.perf_counter()
    records = cascade.classify(items)
    wall = time.perf_counter() - t0
    s = cascade.stats
    return {
        "items": len(records),
        "wall_s": round(wall, 2),
        "items_per_s": round(len(records) / wall, 3),
        "judge_call_rate": round(s.judge_rate, 4),
        "pending": s.pending,
        "worker_abstentions": sum(v.label is None for r in records for v in r.votes),
        "abstention_reasons": sorted({(v.error or "")[:160] for r in records for v in r.votes if v.label is None})[:3],
    }


def recovery(n: int, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """CLI run whose judge server is killed after a third of the items, then a rerun.

    The worker (smollm2-135m) and the judge (qwen2.5-0.5b) each sit behind their own server;
    the rule sends every item to the judge, so every item after the kill is left pending.
    """
    data = tweeteval("val", limit=n)
    inp = workdir / "tweets.csv"
    with inp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for it in data.items:
            w.writerow([it.id, it.fields["text"]])
    out = workdir / "out.jsonl"
    wsrv = LlamaServer({"smollm2-135m": model_path("smollm2-135m")}, workdir=workdir / "w")
    jsrv = LlamaServer({"qwen2.5-0.5b": model_path("qwen2.5-0.5b")}, workdir=workdir / "j")
    cfg = workdir / "cascade.toml"  # per-model options travel in the config file
    cfg.write_text(
        "".join(
            f'[models."{spec}"]\ntimeout_s = {timeout_s}\n'
            for spec in (wsrv.spec("smollm2-135m"), jsrv.spec("qwen2.5-0.5b"))
        ),
        encoding="utf-8",
    )
    cmd = [
        str(Path(sys.executable).parent / "speculabel"),
        "classify",
        str(inp),
        "--config",
        str(cfg),
        "-o",
        str(out),
        "--task",
        "sentiment",
        "--text-column",
        "text",
        "--id-column",
        "id",
        "--workers",
        wsrv.spec("smollm2-135m"),
        "--judge",
        jsrv.spec("qwen2.5-0.5b"),
        "--policy",
        "confident-majority",  # threshold 0.999: every item goes to the judge
        "--threshold",
        "0.999",
        "--batch-size",
        "8",
        "--parallel-workers",
        "--votes",
        str(workdir / "votes.sqlite"),
        "--quiet",
    ]
    res: dict[str, Any] = {"items": n}
    with wsrv, jsrv:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        kill_at = n // 3
        t_kill = float("nan")
        while proc.poll() is None:
            lines = out.read_text(encoding="utf-8").count("\n") if out.exists() else 0
            if lines >= kill_at and jsrv.proc is not None and jsrv.proc.poll() is None:
                jsrv.kill()
                t_kill = time.perf_counter()
                res["killed_after_records"] = lines
            time.sleep(0.05)
        t_end = time.perf_counter()
        first_out = proc.stdout.read() if proc.stdout else ""
        res["first_run_exit"] = proc.returncode
        res["first_run_s"] = round(t_end - t0, 2)
        res["kill_to_exit_s"] = round(t_end - t_kill, 2)
        res["records_after_first_run"] = out.read_text(encoding="utf-8").count("\n") - 1
        t1 = time.perf_counter()
        jsrv.start()
        res["server_restart_s"] = round(time.perf_counter() - t1, 2)
        t2 = time.perf_counter()
        rerun = subprocess.run(cmd, capture_output=True, text=True)
        res["rerun_s"] = round(time.perf_counter() - t2, 2)
        res["rerun_exit"] = rerun.returncode
        res["recovery_s"] = round(time.perf_counter() - t1, 2)
    ids = [r["id"] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())
           if "speculabel" not in r]
    res["records_final"] = len(ids)
    res["each_item_exactly_once"] = sorted(ids) == sorted(it.id for it in data.items)
    res["first_run_tail"] = first_out[-600:]
    return res


def measure_http(
    n: int = 200,
    *,
    n_compare: int = 60,
    n_recovery: int = 60,
    in_flight: str = "1,4,16",
    batch_size: int = 16,
    judge: str = "qwen2.5-1.5b",
    timeout: float = 30.0,
    skip: frozenset[str] = frozenset(),
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """All three measurements (see the module docstring); ``skip`` names phases to leave out:
    compare, cascade, in_process, recovery."""
    missing = [m for m in (*WORKERS, judge) if not is_installed(m)]
    if missing:
        raise RuntimeError(f"models not installed: {missing}; run: speculabel models pull NAME")
    items = tweeteval("val", limit=n).items
    result: dict[str, Any] = {
        "n": len(items),
        "cpu_count": os.cpu_count(),
        "judge": judge,
        "workers": list(WORKERS),
        "policy": "majority",
        "batch_size": batch_size,
        "server": "llama-cpp-python 0.3.36 server, one per worker model, n_threads=2",
        "load_average_at_start": os.getloadavg(),
        "timeout_s": timeout,
    }
    servers = {m: LlamaServer({m: model_path(m)}, workdir=Path(tempfile.mkdtemp()) / m) for m in WORKERS}
    for s in servers.values():
        s.start()
    judge_b = load_backend(judge)
    local = {m: load_backend(m) for m in WORKERS}
    try:
        if "compare" not in skip:
            result["compare"] = {}
            for m in WORKERS:
                http = load_backend(servers[m].spec(m), max_in_flight=4, timeout_s=timeout)
                result["compare"][m] = compare(http, local[m], items[: n_compare])
                http.close()
                say(f"{m} {result['compare'][m]}")
        if "cascade" not in skip:
            result["cascade_http"] = {}
            for k in (int(x) for x in in_flight.split(",")):
                ws = [load_backend(servers[m].spec(m), max_in_flight=k, timeout_s=timeout) for m in WORKERS]
                result["cascade_http"][str(k)] = run_cascade(ws, judge_b, items, batch_size)
                say(f"in flight {k} {result['cascade_http'][str(k)]}")
                for w in ws:
                    w.close()
        for s in servers.values():
            s.stop()  # the in-process run gets the CPU to itself
        if "in_process" not in skip:
            result["cascade_in_process"] = run_cascade([local[m] for m in WORKERS], judge_b, items, batch_size)
            say(f"in-process {result['cascade_in_process']}")
    finally:
        for s in servers.values():
            s.stop()
        for b in (judge_b, *local.values()):
            b.close()
    if "recovery" not in skip:
        with tempfile.TemporaryDirectory() as d:
            result["recovery"] = recovery(n_recovery, Path(d), timeout)
        say(f"recovery {({k: v for k, v in result['recovery'].items() if k != 'first_run_tail'})}")
    return result


def print_table(r: dict[str, Any]) -> None:
    print(
        f"\n{r['n']} TweetEval val tweets, workers {', '.join(r['workers'])}, judge "
        f"{r['judge']} in-process, policy {r['policy']}, batch {r['batch_size']}"
    )
    print(f"{'setup':<28}{'items/s':>10}{'judge calls':>13}{'wall s':>9}")
    for k, v in r.get("cascade_http", {}).items():
        print(
            f"{'HTTP workers, ' + k + ' in flight':<28}{v['items_per_s']:>10.3f}"
            f"{v['judge_call_rate']:>13.1%}{v['wall_s']:>9.1f}"
        )
    if "cascade_in_process" in r:
        v = r["cascade_in_process"]
        print(f"{'in-process workers':<28}{v['items_per_s']:>10.3f}{v['judge_call_rate']:>13.1%}{v['wall_s']:>9.1f}")
    for m, c in r.get("compare", {}).items():
        print(
            f"{m}: HTTP vs in-process on {c['items']} tweets: label agreement "
            f"{c['label_agreement']:.1%}, max |dp| {c['max_abs_prob_diff']}"
        )
    if "recovery" in r:
        rc = r["recovery"]
        print(
            f"recovery ({rc['items']} items): judge server killed after "
            f"{rc.get('killed_after_records')} records; first run exit {rc['first_run_exit']} "
            f"{rc['kill_to_exit_s']} s after the kill; restart {rc['server_restart_s']} s; "
            f"rerun {rc['rerun_s']} s (exit {rc['rerun_exit']}); "
            f"exactly once: {rc['each_item_exactly_once']}"
        )
