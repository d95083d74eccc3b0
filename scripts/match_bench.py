"""The match bench on Banking77 queues: argument parsing around speculabel.match.bench.

    python scripts/match_bench.py --out bench-out/match.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from speculabel.io.datasets import shared_data_dir
    from speculabel.match import bench

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="the banking77 folder [default: the shared data's banking77]")
    ap.add_argument("--out", type=Path, default=Path("bench-out/match.json"))
    ap.add_argument("--n", type=int, default=1000, help="tickets per queue")
    ap.add_argument("--target", type=float, default=bench.TARGET,
                    help="precision the chosen settings must reach on the tune queue")
    ap.add_argument("--certify-target", type=float, default=bench.CERTIFY_TARGET,
                    help="precision the workers' matches are certified for")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--k-grid", default=",".join(map(str, bench.GRID_K)))
    ap.add_argument("--floor-grid", default=",".join(map(str, bench.GRID_FLOOR)))
    ap.add_argument("--reject-grid", default=",".join(map(str, bench.GRID_REJECT)))
    ap.add_argument("--workers-grid", default=";".join(bench.GRID_WORKERS),
                    help="worker sets to try, separated by ';'")
    ap.add_argument("--judge-budget", type=float, default=bench.BUDGET)
    ap.add_argument("--embed-cache", type=Path, default=None,
                    help="keep the fit and tune queues' vectors here between runs (the held-out "
                         "queue is always embedded inside its timed run)")
    a = ap.parse_args()
    data = a.data or shared_data_dir("banking77")
    report = bench.bench(data, n=a.n, grid_k=[int(x) for x in a.k_grid.split(",")],
                         grid_floor=[float(x) for x in a.floor_grid.split(",")],
                         grid_reject=[float(x) for x in a.reject_grid.split(",")],
                         grid_workers=a.workers_grid.split(";"), budget=a.judge_budget,
                         target=a.target, certify_target=a.certify_target, delta=a.delta, embed_cache=a.embed_cache,
                         out_config=a.out.with_suffix(".toml"))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    print(bench.table(report))
    print(f"certificate: {report['certificate']['statement']}")
    print(f"chosen on the tune queue: {report['chosen']}; report: {a.out}; certified "
          f"settings: {a.out.with_suffix('.toml')}")


if __name__ == "__main__":
    main()
