#!/usr/bin/env python
"""Adaptive runs on a file, the rank and stream methods on the same items, gold standing for
the judge (:mod:`speculabel.bench.finite`).  Writes JSON and prints a Markdown table.

    python scripts/bench_adaptive.py --input tweets:test:1000 --input pairs:test:0:1000 \
        --seeds 20 --out bench-out/adaptive.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculabel.bench.finite import METHODS, bench_input, table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", action="append", required=True,
                    help="SOURCE:N, e.g. tweets:test:1000 or pairs:test:0:1000 (repeatable)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--method", action="append", choices=METHODS, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench-out/adaptive.json"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    rows = []
    for spec in a.input:
        source, _, n = spec.rpartition(":")
        if not source or not n.isdigit():
            ap.error(f"--input {spec!r}: expected SOURCE:N, e.g. tweets:test:1000")
        rows += bench_input(source, int(n), target=a.target, delta=a.delta,
                            seeds=range(a.seeds), methods=a.method or METHODS,
                            say=(lambda m: None) if a.quiet else
                            (lambda m: print(m, file=sys.stderr, flush=True)))
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=1))  # after each input: nothing lost
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
