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
from typing import Any

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
    ap.add_argument("--learner-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the learner:minilm worker, e.g. finetune=true "
                         "(repeatable; values read as JSON where they parse)")
    a = ap.parse_args()
    learner: dict[str, Any] = {}
    for opt in a.learner_option:
        key, eq, value = opt.partition("=")
        if not eq or not key:
            ap.error(f"--learner-option: KEY=VALUE expected, got {opt!r}")
        try:
            learner[key] = json.loads(value)
        except ValueError:
            learner[key] = value
    try:
        rows = run_inputs(a.input, lambda src, n, say: bench_input(
            src, n, target=a.target, delta=a.delta, seeds=range(a.seeds),
            methods=a.method or METHODS, say=say, learner=learner), a.out, quiet=a.quiet)
    except ValueError as e:
        ap.error(str(e))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
