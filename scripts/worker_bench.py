"""The worker bench: argument parsing around speculabel.bench.workers (``make bench-workers``).

    python scripts/worker_bench.py --out bench-out/workers/sentiment.json

TweetEval sentiment: each variant fitted on the first ``--fit-n`` test tweets, scored on the first
``--eval-n`` validation tweets; the reference is gold (no judge labels are read here).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    from speculabel.bench import workers
    from speculabel.io.datasets import DataMissing, tweeteval

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out/workers/sentiment.json"))
    ap.add_argument("--variants", default=",".join(workers.VARIANTS),
                    help=f"comma-separated, of: {', '.join(workers.VARIANTS)}")
    ap.add_argument("--fit-n", type=int, default=800)
    ap.add_argument("--eval-n", type=int, default=2000)
    ap.add_argument("--target", type=float, default=workers.TARGET)
    ap.add_argument("--delta", type=float, default=workers.DELTA)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch's CPU threads [default: torch's own]; on a machine shared with "
                         "other jobs, 1 avoids threads spinning while they wait for a core")
    a = ap.parse_args()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in workers.VARIANTS]
    if unknown:
        print(f"--variants: unknown {unknown}; known: {', '.join(workers.VARIANTS)}", file=sys.stderr)
        return 2
    if a.torch_threads is not None:
        import torch

        torch.set_num_threads(a.torch_threads)
    try:
        fit, held = tweeteval("test", a.fit_n), tweeteval("val", a.eval_n)
    except DataMissing as e:
        print(f"worker bench skipped: {e}", file=sys.stderr)
        return 0
    report = workers.bench(fit, held, variants, target=a.target, delta=a.delta)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    print(workers.table(report))
    if report["pairs"]:
        print(workers.pair_table(report))
    print(f"reference: {report['reference']}; fit on {fit.name} ({len(fit)}), scored on "
          f"{held.name} ({len(held)}); coverage certified at whole-data agreement "
          f">= {a.target} w.p. {1 - a.delta:.2f}; report: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
