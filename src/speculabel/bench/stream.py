"""How fast does the judge-call rate fall when a worker learns from the judge?  (A replay.)

A stream of items goes through a cascade whose workers are ``learner:minilm`` (trained on the
reference labels it has seen so far) and, optionally, workers whose votes are given (VADER, or
stored LLM votes).  Items the workers do not settle go to the reference (the judge's stored
labels, or gold labels as a perfect judge); its label is fed back to the learner, which
retrains every ``retrain_every`` labels once it has ``min_per_class`` labels of each class.

The acceptance threshold is re-certified after every retrain with the same exact binomial test as
``speculabel calibrate``, on the items labelled so far: the learner's *out-of-fold*
probabilities for them (no item is scored by a head trained on it) and the other workers'
votes.  Those items lean hard (they were escalated), which makes the threshold conservative;
``audit`` also sends a random share of worker-decided items to the reference.

The result (per-window judge-call rate, agreement, accuracy) is JSON that ``speculabel bench
--learner-stream FILE`` puts into the bench report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.certify.scores import CalibrationData, rule_scores
from speculabel.certify.threshold import calibrate_threshold
from speculabel.policy import ConfidentMajority
from speculabel.records import Item, Vote
from speculabel.tasks import Task


def run_stream(
    task: Task,
    items: Sequence[Item],
    reference: Sequence[str],
    gold: Sequence[str | None],
    *,
    other_votes: Mapping[str, Sequence[Vote]],
    target: float,
    delta: float,
    method: str = "fixed-sequence",
    min_per_class: int = 20,
    retrain_every: int = 100,
    batch: int = 25,
    audit: float = 0.05,
    seed: int = 0,
    embedder: Any = None,
    embedding_cache: Path | None = None,
    say: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Replay the stream; returns the per-item log and every re-certification."""
    from speculabel.backends.learner.backend import LearnerBackend

    lrn = LearnerBackend("learner:minilm", min_per_class=min_per_class,
                         retrain_every=retrain_every, embedder=embedder)
    if embedding_cache is not None and embedding_cache.exists():
        say(f"{lrn.preload_embeddings(embedding_cache)} cached embeddings from {embedding_cache}")
    lrn.score(task, [])
    labels = task.label_names
    workers = ["learner:minilm", *other_votes]
    rng = np.random.default_rng(seed)
    threshold: float | None = None
    labelled: list[int] = []  # item indices the reference has labelled
    log: list[dict[str, Any]] = []
    recal: list[dict[str, Any]] = []
    t0 = time.time()
    for start in range(0, len(items), batch):
        idx = list(range(start, min(start + batch, len(items))))
        lv = lrn.score(task, [items[i] for i in idx])
        rule = ConfidentMajority(threshold if threshold is not None else 0.0)
        to_judge: list[int] = []
        for i, v in zip(idx, lv, strict=True):
            d = rule.decide([v, *(other_votes[w][i] for w in other_votes)], len(workers))
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
        if not lrn.observe([items[i] for i in to_judge], [reference[i] for i in to_judge]):
            continue
        probs = lrn.cross_val_proba([lrn.row_of(items[i]) for i in labelled],
                                    [reference[i] for i in labelled], 5, seed)
        oof = [Vote.from_probs("learner:minilm", dict(zip(labels, p, strict=True)),
                               method="classifier") for p in probs]
        data = CalibrationData(
            labels, workers,
            [[oof[k], *(other_votes[w][i] for w in other_votes)] for k, i in enumerate(labelled)],
            [reference[i] for i in labelled],
        )
        scores, agree = rule_scores(data, "confident-majority")
        res = calibrate_threshold(scores, agree, target, delta, method=method)
        threshold = res.threshold
        recal.append({"after_items": start + len(idx), "labels": lrn.n_labels,
                      "threshold": threshold, "cal_coverage": res.coverage,
                      "feasible": res.feasible, "best_bound": res.best_bound})
        say(f"  item {start + len(idx)}: learner trained on {lrn.trained_on} labels, "
            f"threshold {threshold}, calibration coverage {100 * res.coverage:.1f}% "
            f"({time.time() - t0:.0f}s)")
    return {"log": log, "recalibrations": recal, "labels": lrn.n_labels,
            "retrains": lrn.retrains, "seconds": round(time.time() - t0, 1)}


def windows(log: Sequence[Mapping[str, Any]], size: int) -> list[dict[str, Any]]:
    """Per window of ``size`` items: judge-call rate, agreement and accuracy of the workers."""
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


def summary(log: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    dec = [r for r in log if r["by_workers"]]
    calls = sum(r["judge_call"] for r in log)
    return {
        "items": len(log),
        "judge_calls": calls,
        "judge_call_rate": calls / max(1, len(log)),
        "decided_by_workers": len(dec),
        "agreement_with_reference": (sum(r["agree_ref"] for r in dec) / len(dec)) if dec else None,
        "accuracy_vs_gold": (sum(r["agree_gold"] for r in dec) / len(dec)) if dec else None,
    }
