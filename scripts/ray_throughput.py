#!/usr/bin/env python
"""The Ray engine's overhead on this machine (the same cascade on the same TweetEval tweets, single
process against Ray), and items per hour on N nodes for the paper's setup (see
:mod:`speculabel.scale.throughput` and docs/scale.md).

    python scripts/ray_throughput.py --n 500 --out bench-out/ray_throughput.json
    python scripts/ray_throughput.py --cluster-only          # only the N-node calculation
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculabel.scale.throughput import measure_overhead, nodes_like_this_one, paper_cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="TweetEval test tweets (the first N)")
    ap.add_argument("--workers", default="vader,gemma3-270m")
    ap.add_argument("--judge", default="qwen2.5-1.5b")
    ap.add_argument("--policy", default="majority")
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--address", default=None, help="a Ray cluster (default: a local instance)")
    ap.add_argument("--work-dir", type=Path, default=Path("bench-out/ray_throughput"))
    ap.add_argument("--out", type=Path, default=Path("bench-out/ray_throughput.json"))
    ap.add_argument("--cluster-only", action="store_true", help="skip the measurement")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--worker-rate", type=float, default=700.0,
                    help="items/s of one 3B worker replica on one GPU (assumption, docs/scale.md)")
    ap.add_argument("--judge-replica-rate", type=float, default=190.0,
                    help="items/s of one 32B judge replica (assumption, docs/scale.md)")
    ap.add_argument("--judge-gpus", type=int, default=2, help="GPUs per judge replica (TP)")
    ap.add_argument("--judge-rates", default="0.1,0.25,0.5",
                    help="judge-call rates to tabulate for the paper's setup")
    args = ap.parse_args()

    result: dict[str, object] = {}
    if not args.cluster_only:
        measured = measure_overhead(
            args.n, args.work_dir, workers=args.workers.split(","), judge=args.judge,
            policy=args.policy, threshold=args.threshold, batch_size=args.batch_size,
            address=args.address, say=lambda m: print(m, file=sys.stderr, flush=True))
        result["overhead"] = measured
        result["nodes_like_this_one"] = nodes_like_this_one(measured, args.judge)
    result["paper_setup"] = paper_cluster(
        [float(r) for r in args.judge_rates.split(",")], args.worker_rate,
        args.judge_replica_rate, args.judge_gpus, args.gpus_per_node)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
