"""The worker bench: argument parsing around speculabel.bench.workers (``make bench-workers``).

    python scripts/worker_bench.py --out bench-out/workers/sentiment.json

TweetEval sentiment: each variant fitted on the first ``--fit-n`` test tweets, scored on the first
``--eval-n`` validation tweets.  ``--task pairs``: Banking77 "similar ticket" pairs, fitted on
``--fit-n`` train pairs and scored on ``--eval-n`` test pairs, gold the reference
(:mod:`speculabel.bench.pairworkers`).  The reference is gold, or with ``--judge`` the judge's labels
(fit and scored against), read from the vote store ``--votes`` and computed where missing (so a
second run, or a smaller one, calls no judge); tweets the judge abstained on are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def main() -> int:
    from speculabel.bench import workers
    from speculabel.io.datasets import DataMissing, tweeteval

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out/workers/sentiment.json"))
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of: {', '.join(workers.VARIANTS)} [default: all]; "
                         "with --task pairs, of speculabel.bench.pairworkers.PAIR_VARIANTS")
    ap.add_argument("--fit-n", type=int, default=800)
    ap.add_argument("--eval-n", type=int, default=2000)
    ap.add_argument("--target", type=float, default=workers.TARGET)
    ap.add_argument("--delta", type=float, default=workers.DELTA)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch's CPU threads [default: torch's own]; on a machine shared with "
                         "other jobs, 1 avoids threads spinning while they wait for a core")
    ap.add_argument("--judge", default=None,
                    help="judge spec (e.g. qwen2.5-1.5b) whose labels are the reference "
                         "[default: gold]")
    ap.add_argument("--votes", type=Path, default=None,
                    help="vote store for the judge's votes [default: $SPECULABEL_HOME/votes.sqlite]")
    ap.add_argument("--judge-ms", type=float, default=None,
                    help="the judge's cost per item for the speedup column [default: its mean "
                         "latency in the vote store with --judge, else no speedup column]")
    ap.add_argument("--task", choices=("sentiment", "pairs"), default="sentiment")
    a = ap.parse_args()
    if a.task == "pairs":
        return _pairs(a)
    if a.judge_ms is not None and not a.judge_ms > 0:
        print(f"--judge-ms: must be a positive number of milliseconds, got {a.judge_ms}",
              file=sys.stderr)
        return 2
    variants = [v.strip() for v in (a.variants or ",".join(workers.VARIANTS)).split(",")
                if v.strip()]
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
    ref: list[str] | None = None
    fit_ref: list[str] | None = None
    judge_ms = a.judge_ms or 0.0
    if a.judge:
        from speculabel.errors import SpeculabelError
        from speculabel.io.paths import votes_path

        store = votes_path(a.votes)
        try:
            fit_votes, fit_ms = workers.judge_labels(fit.items, a.judge, store)
            held_votes, held_ms = workers.judge_labels(held.items, a.judge, store)
        except SpeculabelError as e:
            print(f"--judge {a.judge}: {e}", file=sys.stderr)
            return 2
        nf, nh = sum(v is not None for v in fit_votes), sum(v is not None for v in held_votes)
        judge_ms = a.judge_ms or (fit_ms * nf + held_ms * nh) / max(1, nf + nh)
        fit, fit_ref = _labelled_only(fit, fit_votes)
        held, ref = _labelled_only(held, held_votes)
    report = workers.bench(fit, held, variants, reference=ref, fit_reference=fit_ref,
                           target=a.target, delta=a.delta, judge_ms=judge_ms)
    if a.judge:
        report["judge"] = a.judge
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    print(workers.table(report))
    if report["pairs"]:
        print(workers.pair_table(report))
    print(f"reference: {a.judge or 'gold'}; fit on {fit.name} ({len(fit)}), scored on "
          f"{held.name} ({len(held)}); coverage certified at whole-data agreement "
          f">= {a.target} w.p. {1 - a.delta:.2f}; report: {a.out}")
    return 0


def _pairs(a: argparse.Namespace) -> int:
    """The pair side: gold-labelled Banking77 pairs, no judge."""
    from speculabel.bench import pairworkers
    from speculabel.io.datasets import DataMissing

    if a.judge:
        print("--task pairs: the reference is gold (no --judge)", file=sys.stderr)
        return 2
    variants = ([v.strip() for v in a.variants.split(",") if v.strip()] if a.variants
                else list(pairworkers.DEFAULT_VARIANTS))
    if a.torch_threads is not None:
        import torch

        torch.set_num_threads(a.torch_threads)
    try:
        report = pairworkers.bench(a.fit_n, a.eval_n, variants, target=a.target, delta=a.delta)
    except ValueError as e:
        print(f"--variants: {e}", file=sys.stderr)
        return 2
    except DataMissing as e:
        print(f"worker bench skipped: {e}", file=sys.stderr)
        return 0
    out = a.out if a.out != Path("bench-out/workers/sentiment.json") else Path(
        "bench-out/workers/pairs.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(pairworkers.table(report))
    print(f"reference: gold; fit on {report['fit']['source']} ({report['fit']['n']}), scored on "
          f"{report['held_out']['source']} ({report['held_out']['n']}); report: {out}")
    return 0


def _labelled_only(data: Any, labels: list[str | None]) -> tuple[Any, list[str]]:
    """The items the judge labelled, and those labels."""
    from dataclasses import replace

    keep = [i for i, v in enumerate(labels) if v is not None]
    return (replace(data, items=[data.items[i] for i in keep], gold=[data.gold[i] for i in keep]),
            [str(labels[i]) for i in keep])


if __name__ == "__main__":
    sys.exit(main())
