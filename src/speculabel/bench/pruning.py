"""Label pruning on a many-label task: the judge's time and tokens per item, exact against
pruned, on the same Banking77 items (:meth:`KVEngine.score_sequences`, ``prune``).

For each tolerance: seconds and tokens evaluated per item (the task prefix evaluated once
before the clock starts), accuracy against gold, and against the exact scores: the share of
items with the same label and the total variation between the two distributions (pruning's
own bound, plus llama.cpp's batching noise on the labels after the first: the pruned path
evaluates the first label in token order exactly as the exact path does, then whole groups).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Row = dict[str, Any]


def pruning_rows(model: str, n_items: int, tolerances: Sequence[float], *, seed: int = 0,
                 say: Callable[[str], None] = lambda m: None) -> list[Row]:
    """One row per tolerance (0 first: the exact scores every other row is compared with)."""
    from speculabel.backends.llamacpp.backend import LlamaCppBackend
    from speculabel.bench.intents import read_split
    from speculabel.records import Item
    from speculabel.tasks import load_task

    task = load_task("banking77-intent")
    texts, gold = read_split("test")
    pick = np.random.default_rng(seed).choice(len(texts), n_items + 1, replace=False)
    items = [Item(f"b{int(i)}", {"text": texts[int(i)]}) for i in pick]
    want = [gold[int(i)] for i in pick[1:]]
    tols = [0.0, *[t for t in tolerances if t != 0.0]]
    rows: list[Row] = []
    exact: list[Any] = []
    for tol in tols:
        b = LlamaCppBackend.from_spec(model, label_pruning=tol)
        try:
            b.score(task, items[:1])  # loads the task prefix: not part of any item's cost
            start, t0 = b.tokens_evaluated, time.perf_counter()
            votes = b.score(task, items[1:])
            secs, toks = time.perf_counter() - t0, b.tokens_evaluated - start
        finally:
            b.close()
        if tol == 0.0:
            exact = votes
        tv = [0.5 * sum(abs(e.probs[k] - v.probs[k]) for k in e.probs)
              for e, v in zip(exact, votes, strict=True)]
        rows.append({"model": model, "labels": len(task.label_names), "items": n_items,
                     "tolerance": tol, "seconds_per_item": secs / n_items,
                     "tokens_per_item": toks / n_items,
                     "accuracy": float(np.mean([v.label == g for v, g in zip(votes, want,
                                                                             strict=True)])),
                     "same_label_as_exact": float(np.mean([v.label == e.label for v, e in
                                                           zip(votes, exact, strict=True)])),
                     "tv_mean": float(np.mean(tv)), "tv_max": float(np.max(tv))})
        say(f"tolerance {tol:g}: {secs / n_items:.2f} s/item")
    return rows


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table, with each row's speedup over the exact one."""
    base = rows[0]["seconds_per_item"]
    head = ("| model | labels | items | tolerance | s / item | speedup | tokens / item | accuracy "
            "| same label as exact | TV to exact (mean / max) |\n|---|---|---|---|---|---|---|---|"
            "---|---|")
    lines = [f"| {r['model']} | {r['labels']} | {r['items']} | {r['tolerance']:g} | "
             f"{r['seconds_per_item']:.2f} | {base / r['seconds_per_item']:.2f}x | "
             f"{r['tokens_per_item']:.0f} | {r['accuracy']:.2f} | {r['same_label_as_exact']:.2f} "
             f"| {r['tv_mean']:.4f} / {r['tv_max']:.4f} |" for r in rows]
    return "\n".join([head, *lines])
