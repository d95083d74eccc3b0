#!/usr/bin/env python
"""Head-to-head with BARGAIN on the same items, proxy scores and oracle (gold) labels:
:mod:`speculabel.bench.bargain`.  Writes JSON and prints a table.

    python scripts/bench_bargain.py --out bench-out/bargain.json
    python scripts/bench_bargain.py --held-out --out bench-out/bargain-held-out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculabel.bench.bargain import compact_table, head_to_head, proxy_scores, table
from speculabel.bench.metrics import clean
from speculabel.io.datasets import DataMissing

# tuned on (dev) and held out (looked at once, at the end): never the same items
DEV = ("tweets:test", "pairs:test:0")
HELD_OUT = ("tweets:val", "pairs:train:7")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", default=None,
                    help="comma-separated tweets:SPLIT / pairs:SPLIT:SEED [default: the dev set]")
    ap.add_argument("--held-out", action="store_true",
                    help="the held-out inputs (TweetEval validation, Banking77 train pairs)")
    ap.add_argument("--sizes", default="1000,3000", help="input sizes N, comma-separated")
    ap.add_argument("--fit", type=int, default=500, help="gold labels that fit the proxy")
    ap.add_argument("--targets", default="0.8,0.85,0.9")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--rules", default="reuse", help="our stopping rules: reuse,pilot,betting,looks")
    ap.add_argument("--no-bargain", action="store_true", help="leave BARGAIN out")
    ap.add_argument("--cache", type=Path, default=Path("bench-out/bargain-cache"),
                    help="folder of the cached proxy scores")
    ap.add_argument("--out", type=Path, default=Path("bench-out/bargain.json"))
    ap.add_argument("--table-only", nargs="+", type=Path, default=None, metavar="JSON",
                    help="print the tables of stored result files and stop")
    a = ap.parse_args()
    if a.table_only:
        stored = [r for f in a.table_only for r in json.loads(f.read_text())["results"]]
        print(table(stored))
        print()
        print(compact_table(stored))
        return 0
    inputs = a.inputs.split(",") if a.inputs else list(HELD_OUT if a.held_out else DEV)
    try:
        sizes = [int(x) for x in a.sizes.split(",")]
        targets = [float(x) for x in a.targets.split(",")]
    except ValueError as e:
        print(f"error: --sizes / --targets: {e}", file=sys.stderr)
        return 2
    results = []
    for src in inputs:
        for n in sizes:
            try:
                scored = proxy_scores(src, n, a.fit, a.cache)
            except (DataMissing, ValueError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            results.append(head_to_head(scored, targets, a.delta, a.seeds,
                                        rules=a.rules.split(","), bargain=not a.no_bargain,
                                        progress=lambda m: print(m, file=sys.stderr)))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(clean({"results": results}), indent=1))
    print(table(results))
    print()
    print(compact_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
