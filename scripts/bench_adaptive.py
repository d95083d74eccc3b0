#!/usr/bin/env python
"""Adaptive runs on a file, the rank and stream methods on the same items, gold standing for
the judge (:mod:`speculabel.bench.finite`).  Writes JSON and prints a Markdown table.

    python scripts/bench_adaptive.py --input tweets:test:1000 --input pairs:test:0:1000 \
        --seeds 20 --out bench-out/adaptive.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speculabel.bench.finite import METHODS, bench_input, table
from speculabel.bench.inputs import run_inputs


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
    try:
        rows = run_inputs(a.input, lambda src, n, say: bench_input(
            src, n, target=a.target, delta=a.delta, seeds=range(a.seeds),
            methods=a.method or METHODS, say=say), a.out, quiet=a.quiet)
    except ValueError as e:
        ap.error(str(e))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
