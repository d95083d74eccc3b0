#!/usr/bin/env python
"""Peak RSS of ``speculabel classify`` by input rows (see :mod:`speculabel.bench.memory`).

    python scripts/memory_bench.py --rows 100000,1000000 --out bench-out/memory.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speculabel.bench.memory import DEFAULT_MODELS, format_table, run_memory_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="100000,1000000",
                    help="comma-separated input sizes [default: 100000,1000000]")
    ap.add_argument("--models", default=" ".join(DEFAULT_MODELS),
                    help=f"classify's model flags [default: {' '.join(DEFAULT_MODELS)}]")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the inputs and outputs go (a temporary folder inside it)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/memory.json"))
    args = ap.parse_args()
    try:
        sizes = [int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--rows: comma-separated whole numbers, got {args.rows!r}")
    if not sizes or min(sizes) < 1:
        ap.error("--rows: at least one size, each at least 1")
    result = run_memory_bench(sizes, workdir=args.workdir, models=args.models.split(),
                              batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(format_table(result))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
