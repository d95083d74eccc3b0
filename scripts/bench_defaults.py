"""Issue 2's measurement: the default cascade on the first N TweetEval validation tweets.

Per model: per-item latency with and without prefix reuse, accuracy against gold. Then the
cascade (default workers and judge, majority) and the judge alone on the same items, one after
the other in this process, with the same loaded models. Writes JSON and prints a table.

    python scripts/bench_defaults.py --n 100 --out bench-out/defaults.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from speculabel.backends.registry import load_backend
from speculabel.cascade import Cascade
from speculabel.config import DEFAULT_JUDGE, DEFAULT_WORKERS
from speculabel.datasets import shared_data_dir
from speculabel.metrics import percentile
from speculabel.policy import make_policy
from speculabel.records import Item
from speculabel.task import SENTIMENT

LABELS = ["negative", "neutral", "positive"]


def load_tweets(n: int) -> tuple[list[Item], list[str]]:
    d = shared_data_dir() / "tweeteval-sentiment"
    texts = (d / "val_text.txt").read_text(encoding="utf-8").splitlines()[:n]
    gold = [LABELS[int(x)] for x in (d / "val_labels.txt").read_text().split()[:n]]
    return [Item(str(i), {"text": t}) for i, t in enumerate(texts)], gold


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--n-nocache", type=int, default=20, help="items timed without prefix reuse")
    ap.add_argument("--out", type=Path, default=Path("bench-out/defaults.json"))
    ap.add_argument("--policy", default="majority")
    ap.add_argument("--threshold", type=float, default=None)
    args = ap.parse_args()
    try:
        items, gold = load_tweets(args.n)
    except FileNotFoundError as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 0
    models = [*DEFAULT_WORKERS, DEFAULT_JUDGE]
    backends = {m: load_backend(m) for m in models}
    out: dict[str, object] = {"n": len(items), "models": {}, "policy": args.policy}
    per_model: dict[str, dict[str, float]] = {}
    for m, b in backends.items():
        votes = [b.score(SENTIMENT, [it])[0] for it in items]
        lat = [v.latency_s for v in votes]
        acc = sum(v.label == g for v, g in zip(votes, gold, strict=True)) / len(items)
        nc = load_backend(m, prefix_cache=False)
        nc_votes = [nc.score(SENTIMENT, [it])[0] for it in items[: args.n_nocache]]
        nc.close()
        nc_lat = [v.latency_s for v in nc_votes]
        per_model[m] = {
            "accuracy": round(acc, 4),
            "mean_latency_s_prefix_reuse": round(statistics.mean(lat), 4),
            "p95_latency_s_prefix_reuse": round(percentile(lat, 95), 4),
            "mean_latency_s_no_reuse": round(statistics.mean(nc_lat), 4),
            "n_no_reuse": len(nc_lat),
        }
    out["models"] = per_model

    workers = [backends[m] for m in DEFAULT_WORKERS]
    judge = backends[DEFAULT_JUDGE]
    cascade = Cascade(
        SENTIMENT, workers, judge, make_policy(args.policy, args.threshold),
        parallel_workers=False, batch_size=1,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    records = cascade.classify(items)
    cascade_wall, cascade_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    judge_votes = [judge.score(SENTIMENT, [it])[0] for it in items]
    judge_wall, judge_cpu = time.perf_counter() - t0, time.process_time() - c0
    agree = sum(r.label == v.label for r, v in zip(records, judge_votes, strict=True)) / len(items)
    out["cascade"] = {
        "workers": list(DEFAULT_WORKERS),
        "judge": DEFAULT_JUDGE,
        "wall_s": round(cascade_wall, 3),
        "cpu_s": round(cascade_cpu, 3),
        "judge_call_rate": round(cascade.stats.judge_rate, 4),
        "accuracy": round(sum(r.label == g for r, g in zip(records, gold, strict=True)) / len(items), 4),
        "agreement_with_judge": round(agree, 4),
    }
    out["judge_alone"] = {"wall_s": round(judge_wall, 3), "cpu_s": round(judge_cpu, 3)}
    out["speedup_wall"] = round(judge_wall / cascade_wall, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))

    print(f"\nfirst {len(items)} TweetEval validation tweets, sentiment, 2-core CPU\n")
    print(f"{'model':16s} {'acc':>6s} {'ms/item reuse':>14s} {'p95 ms':>8s} {'ms/item no reuse':>17s}")
    for m, r in per_model.items():
        print(
            f"{m:16s} {r['accuracy']:6.2f} {1000 * r['mean_latency_s_prefix_reuse']:14.0f} "
            f"{1000 * r['p95_latency_s_prefix_reuse']:8.0f} {1000 * r['mean_latency_s_no_reuse']:17.0f}"
        )
    c = out["cascade"]
    assert isinstance(c, dict)
    print(
        f"\ncascade ({args.policy}): wall {c['wall_s']} s, judge-call rate {c['judge_call_rate']:.2f}, "
        f"accuracy {c['accuracy']:.2f}, agreement with judge {c['agreement_with_judge']:.2f}"
    )
    print(f"judge alone: wall {judge_wall:.1f} s   speedup {out['speedup_wall']}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
