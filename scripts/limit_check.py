#!/usr/bin/env python
"""A gold-calibrated cascade on Banking77 pairs against the hardware's limit, in one run on the
same items (:mod:`speculabel.bench.limit_run`).  Writes JSON and prints a line.

    python scripts/limit_check.py --n 3000 --out bench-out/limit-3000.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculabel.bench.limit_run import measure


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="pairs to classify")
    ap.add_argument("--calibration", type=int, default=1000, help="gold pairs to calibrate on")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--judge", default="qwen2.5-1.5b")
    ap.add_argument("--judge-items", type=int, default=40, help="pairs to time the judge on")
    ap.add_argument("--out", type=Path, default=Path("bench-out/limit.json"))
    a = ap.parse_args()
    res = measure(a.n, n_cal=a.calibration, target=a.target, judge=a.judge,
                  judge_items=a.judge_items,
                  say=lambda m: print(m, file=sys.stderr, flush=True))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    lim = res["limit"]
    print(f"{res['items']} pairs: cascade {res['cascade_wall_s']:.1f} s, {res['judge_calls']} "
          f"judge calls ({100 * res['judge_share']:.1f} %), gold accuracy "
          f"{res['gold_accuracy']:.3f}; limit {lim['wall_s']:.1f} s (embed {lim['embed_s']:.1f} s"
          f" + judge {lim['judge_s']:.1f} s); measured / limit "
          f"{lim['measured_over_limit']:.2f}; judge alone about {res['judge_alone_est_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
