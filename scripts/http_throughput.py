#!/usr/bin/env python
"""Workers behind llama.cpp servers against the same cascade in-process: exactness, throughput,
recovery after the judge's server dies (see :mod:`speculabel.bench.servers`).

    python scripts/http_throughput.py --n 200 --out bench-out/http_throughput.json
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from speculabel.bench.servers import measure_http, print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-compare", type=int, default=60)
    ap.add_argument("--n-recovery", type=int, default=60)
    ap.add_argument("--in-flight", default="1,4,16")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--judge", default="qwen2.5-1.5b")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="per-request timeout of the HTTP workers; it includes the time a request "
                         "waits in a server that decodes one request at a time")
    ap.add_argument("--skip", default="",
                    help="comma list of phases to skip: compare,cascade,in_process,recovery")
    ap.add_argument("--out", type=Path, default=Path("bench-out/http_throughput.json"))
    args = ap.parse_args()
    result = measure_http(
        args.n, n_compare=args.n_compare, n_recovery=args.n_recovery, in_flight=args.in_flight,
        batch_size=args.batch_size, judge=args.judge, timeout=args.timeout,
        skip=frozenset(filter(None, args.skip.split(","))),
        say=lambda m: print(m, flush=True),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_table(result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop the servers
    main()
