"""How fast does the judge-call rate fall when a worker learns from the judge?

A stream of TweetEval test tweets goes through a cascade whose workers are ``learner:minilm``
(MiniLM embeddings + logistic regression, trained on the judge's answers so far) and, with
``--with-vader``, the VADER lexicon.  Items the workers do not settle go to the judge; its label
is fed back to the learner (``observe``), which retrains every ``--retrain-every`` labels once
it has ``--min-per-class`` labels of each class (it abstains before).

The acceptance threshold is re-certified after every retrain, with the same exact binomial
fixed-sequence test as ``speculabel calibrate`` (target ``--target``, ``--delta``), on the
items the judge has labelled so far: the learner's *out-of-fold* probabilities for them (5-fold,
so no item is scored by a head trained on it) and the other workers' votes.  Those items lean
hard (they were escalated), which makes the threshold conservative; ``--audit`` also sends a
random share of worker-decided items to the judge to keep some easy ones in that sample.

The judge's labels come from the vote store (``--store``; computed by ``speculabel bench`` or
``speculabel calibrate``), so the stream is as long as the stored judge votes reach:
``--reference gold`` replays the same stream with TweetEval's gold labels as a perfect judge.

Writes ``learner_stream[-TAG].json``, ``.md`` and ``.png`` to ``--out`` and prints the table.

    python scripts/learner_stream.py --n 3000 --target 0.8 --with-vader   # or: make learner-stream
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from speculabel import calibrate as cal
from speculabel.policy import ConfidentMajority
from speculabel.records import Item, Vote
from speculabel.task import SENTIMENT

LABELS = SENTIMENT.label_names


def oof_votes(lrn: Any, rows: list[tuple[str, ...]], y: list[str], folds: int, seed: int,
              C: float) -> list[Vote]:
    """The learner's out-of-fold votes on its own training items (5-fold cross-fitting)."""
    from sklearn.linear_model import LogisticRegression

    x = lrn.features(rows)
    yy = np.array(y)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(y)) % folds
    probs = np.zeros((len(y), len(LABELS)))
    for f in range(folds):
        tr, te = fold != f, fold == f
        if len(set(yy[tr])) < 2 or not te.any():
            probs[te] = 1.0 / len(LABELS)
            continue
        m = LogisticRegression(C=C, max_iter=2000).fit(x[tr], yy[tr])
        p = m.predict_proba(x[te])
        for j, cls in enumerate(m.classes_):
            probs[te, LABELS.index(cls)] = p[:, j]
    return [Vote.from_probs("learner:minilm", dict(zip(LABELS, p, strict=True)),
                            method="classifier") for p in probs]


def run_stream(
    items: list[Item],
    reference: list[str],
    gold: list[str],
    *,
    other_votes: dict[str, list[Vote]],
    target: float,
    delta: float,
    method: str,
    min_per_class: int,
    retrain_every: int,
    batch: int,
    audit: float,
    seed: int,
    embedder: Any = None,
    embedding_cache: Path | None = None,
    say: Any = print,
) -> dict[str, Any]:
    from speculabel.backends.learner import LearnerBackend

    lrn = LearnerBackend("learner:minilm", min_per_class=min_per_class,
                         retrain_every=retrain_every, embedder=embedder)
    if embedding_cache is not None and embedding_cache.exists():
        say(f"{lrn.preload_embeddings(embedding_cache)} cached embeddings from {embedding_cache}")
    lrn.score(SENTIMENT, [])
    workers = ["learner:minilm", *other_votes]
    rng = np.random.default_rng(seed)
    threshold: float | None = None
    labelled: list[int] = []  # item indices the judge has labelled
    log: list[dict[str, Any]] = []
    recal: list[dict[str, Any]] = []
    t0 = time.time()
    for start in range(0, len(items), batch):
        idx = list(range(start, min(start + batch, len(items))))
        lv = lrn.score(SENTIMENT, [items[i] for i in idx])
        rule = ConfidentMajority(threshold if threshold is not None else 0.0)
        to_judge: list[int] = []
        for i, v in zip(idx, lv, strict=True):
            votes = [v, *(other_votes[w][i] for w in other_votes)]
            d = rule.decide(votes, len(workers))
            accepted = threshold is not None and d.accepted
            audited = accepted and rng.random() < audit
            if not accepted or audited:
                to_judge.append(i)
            log.append({
                "i": i, "by_workers": accepted, "label": d.label if accepted else None,
                "agree_ref": accepted and d.label == reference[i],
                "agree_gold": accepted and d.label == gold[i],
                "judge_call": not accepted or audited, "learner_voted": v.label is not None,
                "labels_seen": lrn.n_labels,
            })
        labelled.extend(to_judge)
        retrained = lrn.observe([items[i] for i in to_judge], [reference[i] for i in to_judge])
        if retrained:
            rows = [lrn._texts_of(items[i]) for i in labelled]
            lv_oof = oof_votes(lrn, rows, [reference[i] for i in labelled], 5, seed, lrn.C)
            data = cal.CalibrationData(
                LABELS, workers,
                [[lv_oof[k], *(other_votes[w][i] for w in other_votes)]
                 for k, i in enumerate(labelled)],
                [reference[i] for i in labelled],
            )
            scores, agree = cal.rule_scores(data, "confident-majority")
            res = cal.calibrate_threshold(scores, agree, target, delta, method=method)
            threshold = res.threshold
            recal.append({"after_items": start + len(idx), "labels": lrn.n_labels,
                          "threshold": threshold, "cal_coverage": res.coverage,
                          "feasible": res.feasible, "best_bound": res.best_bound})
            say(f"  item {start + len(idx)}: learner trained on {lrn.trained_on} judge labels, "
                f"threshold {threshold}, calibration coverage {100 * res.coverage:.1f}% "
                f"({time.time() - t0:.0f}s)")
    return {"log": log, "recalibrations": recal, "labels": lrn.n_labels,
            "retrains": lrn.retrains}


def windows(log: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    out = []
    for s in range(0, len(log), size):
        w = log[s : s + size]
        dec = [r for r in w if r["by_workers"]]
        out.append({
            "items": f"{s + 1}-{s + len(w)}",
            "end": s + len(w),
            "labels_at_start": w[0]["labels_seen"],
            "judge_call_rate": sum(r["judge_call"] for r in w) / len(w),
            "decided_by_workers": len(dec),
            "agreement_with_judge": (sum(r["agree_ref"] for r in dec) / len(dec)) if dec else None,
            "accuracy_vs_gold": (sum(r["agree_gold"] for r in dec) / len(dec)) if dec else None,
            "learner_voting": sum(r["learner_voted"] for r in w) / len(w),
        })
    return out


def markdown(meta: dict[str, Any], wins: list[dict[str, Any]], total: dict[str, Any]) -> str:
    lines = [
        f"### Learner stream: {meta['n']} TweetEval test tweets, reference {meta['reference']}",
        "",
        f"Workers {', '.join(meta['workers'])}; confident majority, threshold re-certified after "
        f"every retrain (target {meta['target']}, delta {meta['delta']}, {meta['method']}); "
        f"learner votes from {meta['min_per_class']} labels per class, retrains every "
        f"{meta['retrain_every']}; audit {meta['audit']}.",
        "",
        "| items | judge labels at start | learner voting | judge-call rate | "
        "decided by workers | agreement with reference | accuracy vs gold |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in wins:
        agr = f"{w['agreement_with_judge']:.3f}" if w["agreement_with_judge"] is not None else "-"
        acc = f"{w['accuracy_vs_gold']:.3f}" if w["accuracy_vs_gold"] is not None else "-"
        lines.append(f"| {w['items']} | {w['labels_at_start']} | {100 * w['learner_voting']:.0f}% "
                     f"| {100 * w['judge_call_rate']:.1f}% | {w['decided_by_workers']} | {agr} "
                     f"| {acc} |")
    agr_t = total["agreement_with_reference"]
    lines += ["", f"Overall: judge-call rate {100 * total['judge_call_rate']:.1f}%, "
              f"{total['decided_by_workers']} items decided by the workers, agreement "
              + (f"{agr_t:.3f}" if agr_t is not None else "-")
              + f" (target {meta['target']})."]
    return "\n".join(lines) + "\n"


def plot(wins: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [w["end"] for w in wins]
    ax.plot(x, [w["judge_call_rate"] for w in wins], marker="o", label="judge-call rate")
    ax.plot(x, [w["agreement_with_judge"] if w["agreement_with_judge"] is not None else np.nan
                for w in wins], marker="s", label="agreement on worker-decided items")
    ax.axhline(meta["target"], color="gray", linestyle=":", label=f"target {meta['target']}")
    ax.set_xlabel("items streamed (judge labels accumulate)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(f"{' + '.join(meta['workers'])}, reference: {meta['reference']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--reference", choices=("judge", "gold"), default="judge")
    ap.add_argument("--judge", default="qwen2.5-1.5b")
    ap.add_argument("--store", type=Path, default=None,
                    help="vote store with the judge's votes (default: the CLI's, "
                         "$SPECULABEL_HOME/votes.sqlite)")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--method", default="fixed-sequence", choices=cal.METHODS)
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
                    help="a learner's embeddings.npz to reuse (e.g. guarantee_check's)")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from speculabel.datasets import DataMissing, tweeteval

    try:
        ds = tweeteval("test", args.n)
    except DataMissing as e:
        say(f"skipped: {e}")
        return 0
    items, gold = list(ds.items), list(ds.gold)
    if args.reference == "judge":
        from speculabel.bench import default_store_path
        from speculabel.votestore import VoteStore

        args.store = args.store or default_store_path()
        if not args.store.exists():
            say(f"no vote store at {args.store}: run the judge first (speculabel calibrate / "
                "bench), or use --reference gold")
            return 2
        with VoteStore(args.store) as store:
            jv = cal.stored_votes(SENTIMENT, items, [args.judge], store)[args.judge]
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
    t0 = time.time()
    result = run_stream(
        items, [r or "" for r in reference], gold, other_votes=other, target=args.target,
        delta=args.delta, method=args.method, min_per_class=args.min_per_class,
        retrain_every=args.retrain_every, batch=args.batch, audit=args.audit, seed=args.seed,
        embedding_cache=args.embedding_cache, say=say,
    )
    log = result["log"]
    dec = [r for r in log if r["by_workers"]]
    total = {
        "items": len(log),
        "judge_calls": sum(r["judge_call"] for r in log),
        "judge_call_rate": sum(r["judge_call"] for r in log) / max(1, len(log)),
        "decided_by_workers": len(dec),
        "agreement_with_reference": (sum(r["agree_ref"] for r in dec) / len(dec)) if dec else None,
        "accuracy_vs_gold": (sum(r["agree_gold"] for r in dec) / len(dec)) if dec else None,
        "seconds": round(time.time() - t0, 1),
    }
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
    md = markdown(meta, wins, total)
    (args.out / f"learner_stream{tag}.md").write_text(md)
    plot(wins, meta, args.out / f"learner_stream{tag}.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
