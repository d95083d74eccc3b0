#!/usr/bin/env python
"""Head-to-head with TRACER on intent routing (Banking77, and its held-out 38-intent slice):
:func:`speculabel.bench.tracer.head_to_head`.  Writes JSON and prints a Markdown table.

    python scripts/bench_tracer.py --out bench-out/tracer.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculabel.io.datasets import DataMissing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out/tracer.json"))
    ap.add_argument("--cache", type=Path, default=Path("bench-out/cache"),
                    help="where the MiniLM embeddings of the texts are kept")
    ap.add_argument("--budgets", default="500,1500")
    ap.add_argument("--targets", default="0.90,0.92,0.95")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed-list", default=None,
                    help="only these seeds, e.g. 5,6,7 (to split a run between processes)")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--judge", default="qwen2.5-1.5b",
                    help="the teacher of data set banking77-judge (an installed model)")
    ap.add_argument("--judge-items", default="600,200", metavar="TRAIN,TEST",
                    help="banking77-judge: random train and test items the judge labels "
                         "(stored in --cache as they come; budgets draw from the train ones)")
    ap.add_argument("--data", default="banking77,banking77-holdout",
                    help="banking77 (77 intents) and/or banking77-holdout (38 intents)")
    ap.add_argument("--systems", default="speculabel,tracer",
                    help="speculabel, speculabel-margin (the margin rule), tracer")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (1: no oversubscription on a shared machine)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="only merge these result files into --out and print the table")
    args = ap.parse_args()
    if args.merge:
        from speculabel.bench.tracer import merge, table

        result = merge([json.loads(p.read_text(encoding="utf-8")) for p in args.merge])
        args.out.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
        print(table(result))
        return 0

    from threadpoolctl import threadpool_limits

    from speculabel.bench.intents import banking77, holdout_intents, judge_taught
    from speculabel.bench.tracer import head_to_head, table
    from speculabel.tasks import load_task, with_labels

    systems = args.systems.split(",")
    if "tracer" in systems:
        try:
            import tracer  # noqa: F401
        except ImportError:
            print("tracer-llm is not installed: pip install 'speculabel[tracer]'", file=sys.stderr)
            return 2
    intent = load_task("banking77-intent")
    sets = {}
    try:
        for name in args.data.split(","):
            if name == "banking77":
                sets[name] = (banking77("train", args.cache), banking77("test", args.cache),
                              intent)
            elif name == "banking77-holdout":
                keep = holdout_intents()
                sets[name] = (banking77("train", args.cache, keep),
                              banking77("test", args.cache, keep), with_labels(intent, keep))
            elif name == "banking77-judge":
                n_train, n_test = (int(v) for v in args.judge_items.split(","))
                taught = [judge_taught(banking77(split, args.cache), n, args.judge,
                                       args.cache / f"judge-{args.judge}-{split}.jsonl",
                                       say=lambda m: print(m, file=sys.stderr))
                          for split, n in (("train", n_train), ("test", n_test))]
                sets[name] = (taught[0], taught[1], intent)
            else:
                print(f"--data: unknown data set {name!r}", file=sys.stderr)
                return 2
    except DataMissing as e:
        print(f"skipping the TRACER bench: {e}")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = (json.loads(args.out.read_text(encoding="utf-8"))["draws"] if args.out.exists()
            else [])  # an interrupted run continues; its finished draws are kept

    def save(result: dict[str, object]) -> None:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
        tmp.replace(args.out)

    with threadpool_limits(args.threads):
        result = head_to_head(
            sets, budgets=[int(b) for b in args.budgets.split(",")],
            targets=[float(t) for t in args.targets.split(",")],
            seeds=[int(x) for x in args.seed_list.split(",")] if args.seed_list else args.seeds,
            delta=args.delta, systems=systems, say=lambda m: print(m, file=sys.stderr),
            done=done, save=save)
    save(result)
    print(table(result))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
