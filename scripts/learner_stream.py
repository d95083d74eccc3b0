"""Replay a TweetEval stream through VADER + a learning worker (:mod:`speculabel.bench.stream`)
and write the JSON that ``speculabel bench --learner-stream`` puts into the report.

    python scripts/learner_stream.py --n 3000 --target 0.8 --with-vader   # or: make learner-stream
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculabel.bench.stream import run_stream, summary, windows
from speculabel.certify.threshold import METHODS
from speculabel.certify.votes import stored_votes
from speculabel.records import Vote
from speculabel.tasks import SENTIMENT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--reference", choices=("judge", "gold"), default="judge")
    ap.add_argument("--judge", default="qwen2.5-1.5b")
    ap.add_argument("--votes", dest="store", type=Path, default=None,
                    help="vote store with the judge's votes (default: the CLI's, "
                         "$SPECULABEL_HOME/votes.sqlite)")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--method", default="fixed-sequence", choices=METHODS)
    ap.add_argument("--with-vader", action="store_true")
    ap.add_argument("--min-per-class", type=int, default=20)
    ap.add_argument("--retrain-every", type=int, default=100)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--audit", type=float, default=0.05)
    ap.add_argument("--window", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/calibration"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--embedding-cache", type=Path,
                    default=Path("bench-out/calibration/learner-val/embeddings.npz"),
                    help="a learner's embeddings.npz to reuse")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from speculabel.io.datasets import DataMissing, tweeteval

    try:
        ds = tweeteval("test", args.n)
    except DataMissing as e:
        say(f"skipped: {e}")
        return 0
    items, gold = list(ds.items), list(ds.gold)
    if args.reference == "judge":
        from speculabel.io.paths import default_votes_path
        from speculabel.io.votes import VoteStore

        args.store = args.store or default_votes_path()
        if not args.store.exists():
            say(f"no vote store at {args.store}: run the judge first (speculabel calibrate / "
                "bench), or use --reference gold")
            return 2
        with VoteStore(args.store) as store:
            jv = stored_votes(SENTIMENT, items, [args.judge], store)[args.judge]
        n = next((i for i, v in enumerate(jv) if v is None), len(jv))
        if n < len(items):
            say(f"the store has judge votes for the first {n} of {len(items)} items: "
                f"the stream stops there")
        items, gold = items[:n], gold[:n]
        reference = [v.label for v in jv[:n] if v is not None]
        ref_name = f"judge {args.judge}"
    else:
        reference = list(gold)
        ref_name = "gold labels (a perfect judge)"
    other: dict[str, list[Vote]] = {}
    if args.with_vader:
        from speculabel.backends.registry import load_backend

        with load_backend("vader") as vb:
            other["vader"] = vb.score(SENTIMENT, items)
    result = run_stream(
        SENTIMENT, items, [r or "" for r in reference], gold, other_votes=other,
        target=args.target,
        delta=args.delta, method=args.method, min_per_class=args.min_per_class,
        retrain_every=args.retrain_every, batch=args.batch, audit=args.audit, seed=args.seed,
        embedding_cache=args.embedding_cache, say=say,
    )
    log = result["log"]
    total = {**summary(log), "seconds": result["seconds"]}
    meta = {"n": len(items), "reference": ref_name, "workers": ["learner:minilm", *other],
            "target": args.target, "delta": args.delta, "method": args.method,
            "min_per_class": args.min_per_class, "retrain_every": args.retrain_every,
            "audit": args.audit, "batch": args.batch}
    wins = windows(log, args.window)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    (args.out / f"learner_stream{tag}.json").write_text(json.dumps(
        {"meta": meta, "total": total, "windows": wins,
         "recalibrations": result["recalibrations"]}, indent=2))
    for w in wins:
        print(f"{w['items']:>11}  judge calls {100 * w['judge_call_rate']:5.1f}%  "
              f"decided by workers {w['decided_by_workers']}")
    print(f"overall: {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
