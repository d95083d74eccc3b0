#!/usr/bin/env python
"""Replay adaptive runs over a stream (a data set in random orders, judge votes from the vote
store): :func:`speculabel.bench.stream.replay`.  Writes the JSON that ``speculabel bench
--report-only --stream FILE`` puts into the bench report, and prints a summary.

    python scripts/adaptive_stream.py --data tweeteval:test:6000 --task sentiment \
        --workers vader,learner:minilm --out bench-out/streams/sentiment.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculabel.adaptive.plan import AdaptiveSettings
from speculabel.backends.registry import load_backend
from speculabel.bench.metrics import clean
from speculabel.bench.stream import fill_judge_votes, replay, workers_factory
from speculabel.io.datasets import DataMissing, from_spec
from speculabel.io.paths import votes_path
from speculabel.io.votes import VoteStore
from speculabel.tasks import load_task


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tweeteval:test:6000 or banking77-pairs:3000")
    ap.add_argument("--task", required=True)
    ap.add_argument("--workers", required=True)
    ap.add_argument("--judge", default="qwen2.5-1.5b")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--audit-rate", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--recertify-every", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--window", type=int, default=250)
    ap.add_argument("--votes", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fill", action="store_true",
                    help="ask the judge for the stream's votes the store lacks (once; stored)")
    a = ap.parse_args()
    try:
        data = from_spec(a.data)
    except DataMissing as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 0
    task = load_task(a.task)
    settings = AdaptiveSettings(a.target, a.delta, "dataset", a.audit_rate, a.warmup,
                                a.recertify_every, 0)
    settings.check()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with VoteStore(votes_path(a.votes)) as store:
        make = workers_factory(task, a.workers.split(","), store, data.items,
                               a.out.with_suffix(".embeddings.npz"))
        if a.fill:
            fill_judge_votes(task, data.items, a.judge, store,
                             say=lambda m: print(m, file=sys.stderr, flush=True))
        judge = load_backend(a.judge)
        try:
            result = replay(task, data.items, data.gold, judge, make, settings, store,
                            seeds=range(a.seeds), window=a.window,
                            say=lambda m: print(m, file=sys.stderr, flush=True))
        finally:
            judge.close()
    result["workers"] = a.workers.split(",")
    result["judge"] = a.judge
    result["data"] = a.data
    a.out.write_text(json.dumps(clean(result), indent=1), encoding="utf-8")
    print(f"judge calls: first run {result['judge_call_rate']['first']:.1%}, mean "
          f"{result['judge_call_rate']['mean']:.1%}; realised agreement mean "
          f"{result['realised_agreement']['mean']:.3f} (min {result['realised_agreement']['min']:.3f}); "
          f"streams missing the target: {result['violation_share']:.0%}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
