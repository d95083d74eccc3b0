#!/usr/bin/env python
"""Load benchmark of ``speculabel serve`` against batch ``Cascade.classify`` on the same items
(see :mod:`speculabel.serve.bench`).

    python scripts/bench_serve.py --workers vader,smollm2-135m --judge gemma3-270m \
        --clients 8 --requests 10 --items 5 --out bench-out/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from speculabel.cascade.config import make_config
from speculabel.serve.bench import print_table, register_simulated, run_bench, simulated_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--workers", default="vader,smollm2-135m")
    ap.add_argument("--judge", default="gemma3-270m")
    ap.add_argument("--policy", default="majority")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=10, help="requests per client")
    ap.add_argument("--items", type=int, default=5, help="items per request")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--data", default="tweeteval", help="tweeteval (the shared data) or demo")
    ap.add_argument("--simulate", action="store_true",
                    help="simulated models whose cost is a sleep (workers sim:a, sim:b at 5 ms a "
                         "call + 2 ms an item, judge sim:judge at 10 + 10 ms): what the service "
                         "adds, whatever else the machine runs")
    ap.add_argument("--out", type=Path, default=Path("bench-out/serve.json"))
    args = ap.parse_args()
    env = None
    try:
        if args.simulate:
            where = register_simulated(Path(tempfile.mkdtemp(prefix="bench-sim-")))
            env = {"PYTHONPATH": os.pathsep.join([str(where), os.environ.get("PYTHONPATH", "")])}
            data = simulated_config(args.task, args.batch_size)
        else:
            data = {"task": args.task, "workers": args.workers, "judge": args.judge,
                    "policy": args.policy, "batch_size": args.batch_size}
        cfg = make_config(data, "flags")
    except ValueError as e:
        sys.exit(f"error: {e}")
    result = run_bench(cfg, clients=args.clients, requests=args.requests, per_request=args.items,
                       repeats=args.repeats, max_wait_ms=args.max_wait_ms, source=args.data,
                       env=env, say=lambda m: print(m, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_table(result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop the server
    main()
