"""The cascade against the hardware's limit on Banking77 pairs, in one run on the same items.

A gold-calibrated cascade (``similarity:minilm`` + ``learner:minilm``, fitted and certified with
:func:`speculabel.calibrate` on ``n_cal`` gold-labelled pairs, scope dataset at ``target``) with
the real judge classifies ``n`` other pairs, timed from the first item to the last record (the
models already loaded, as in the bench's measured runs). Then, on the same pairs:

* the embedder's own throughput: every distinct text embedded once, cold, in one call;
* the judge's marginal cost: its wall time on ``judge_items`` pairs after a warm-up call,
  per pair.

Limit = embed + judge calls x marginal (:func:`speculabel.bench.limit.hardware_limit`); the
issue's goal is a measured wall time at most 1.5x the limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def measure(n: int = 3000, *, n_cal: int = 1000, target: float = 0.9, delta: float = 0.1,
            judge: str = "qwen2.5-1.5b", judge_items: int = 40, seed: int = 0,
            say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """See the module docstring; returns the figures as a dict (JSON-ready)."""
    from speculabel.backends.registry import load_backend
    from speculabel.bench.limit import distinct_texts, embedder_of, hardware_limit
    from speculabel.certify.api import calibrate
    from speculabel.io.datasets import banking77_pairs

    data = banking77_pairs(n + n_cal, seed=seed, split="test")
    cal_items, cal_gold = data.items[:n_cal], [str(g) for g in data.gold[:n_cal]]
    items = data.items[n_cal:]
    say(f"calibrating on {n_cal} gold pairs (load average {os.getloadavg()[0]:.2f})")
    workers = [load_backend("similarity:minilm"), load_backend("learner:minilm")]
    cert = calibrate(task="similar-ticket", workers=workers, items=cal_items,
                     references=cal_gold, scope="dataset", target=target, delta=delta,
                     seed=seed)
    if cert.threshold is None:
        raise RuntimeError(f"nothing certified: {cert.statement}")
    the_judge = load_backend(judge)
    cascade = cert.cascade(the_judge)
    the_judge.score(cascade.task, items[:2])  # load the judge before the clock starts
    for w in workers:  # the cascade pays for every text itself
        emb = embedder_of(w)
        if emb is not None and callable(getattr(emb, "forget", None)):
            emb.forget()
    say(f"cascade on {len(items)} pairs (load average {os.getloadavg()[0]:.2f})")
    t0 = time.perf_counter()
    recs = cascade.classify(items)
    wall = time.perf_counter() - t0
    calls = sum(r.decided_by == "judge" for r in recs)
    emb = embedder_of(workers[0])
    if emb is None:
        raise RuntimeError("similarity:minilm has no embedder")
    if callable(getattr(emb, "forget", None)):
        emb.forget()
    texts = distinct_texts(items)
    say(f"embedder alone on {len(texts)} distinct texts")
    t0 = time.perf_counter()
    emb(texts)
    embed_s = time.perf_counter() - t0
    say(f"judge alone on {judge_items} pairs")
    sample = items[:judge_items]
    t0 = time.perf_counter()
    the_judge.score(cascade.task, sample)
    judge_s = time.perf_counter() - t0
    limit = hardware_limit(judge_wall_s=judge_s, n_items=len(sample), judge_calls=calls,
                           embed_s=embed_s, cascade_wall_s=wall)
    gold = [str(g) for g in data.gold[n_cal:]]
    return {"items": len(items), "calibration_items": n_cal, "target": target,
            "statement": cert.statement, "threshold": cert.threshold, "judge": judge,
            "cascade_wall_s": wall, "judge_calls": calls, "judge_share": calls / len(items),
            "gold_accuracy": sum(r.label == g for r, g in zip(recs, gold, strict=True))
            / len(items),
            "distinct_texts": len(texts), "limit": limit,
            "judge_alone_est_s": judge_s / len(sample) * len(items),
            "load_average_after": os.getloadavg()[0]}
