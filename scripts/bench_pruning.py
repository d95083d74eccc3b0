#!/usr/bin/env python
"""Label pruning on Banking77 (77 intents): the judge exact against pruned on the same items
(:mod:`speculabel.bench.pruning`).  Writes JSON and prints a Markdown table.

    python scripts/bench_pruning.py --model qwen2.5-1.5b --items 40 --out bench-out/pruning.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-1.5b", help="an installed llama.cpp model")
    ap.add_argument("--items", type=int, default=40, help="Banking77 test items (random, seeded)")
    ap.add_argument("--tolerance", default="0.001,0.01",
                    help="comma-separated pruning tolerances (the exact scores always run first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/pruning.json"))
    a = ap.parse_args()
    try:
        tols = [float(t) for t in a.tolerance.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--tolerance: numbers expected, got {a.tolerance!r}")
    if a.items < 1 or any(not 0.0 <= t < 1.0 for t in tols):
        ap.error("--items must be at least 1 and every tolerance in [0, 1)")
    from speculabel.bench.pruning import pruning_rows, table

    rows = pruning_rows(a.model, a.items, tols, seed=a.seed,
                        say=lambda m: print(m, file=sys.stderr))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": rows}, indent=1), encoding="utf-8")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
