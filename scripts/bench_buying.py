#!/usr/bin/env python
"""calibrate(buy="sequential") against labelling every calibration item, on the same items,
gold standing for the judge (:mod:`speculabel.bench.buying`).  Writes JSON and prints a table.

    python scripts/bench_buying.py --input tweets:test:1000 --input pairs:test:0:1000 \
        --held-out 2000 --seeds 5 --out bench-out/buying.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speculabel.bench.buying import bench_input, table
from speculabel.bench.inputs import run_inputs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", action="append", required=True,
                    help="SOURCE:N calibration items, e.g. tweets:test:1000 (repeatable)")
    ap.add_argument("--held-out", type=int, default=2000, help="other items to measure on")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first", type=int, default=None, help="the first look's sample size")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path("bench-out/buying.json"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    try:
        rows = run_inputs(a.input, lambda src, n, say: bench_input(
            src, n, a.held_out, target=a.target, delta=a.delta, seeds=range(a.seeds),
            first=a.first, say=say), a.out, quiet=a.quiet)
    except ValueError as e:
        ap.error(str(e))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
