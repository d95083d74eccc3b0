"""``calibrate(buy="sequential")`` against labelling every calibration item, on the same items.

For each input and seed: ``N`` calibration items and ``M`` other items of the same data set
(the held-out share, never labelled by the run); the task's default cheap workers
(:data:`speculabel.bench.finite.TASKS`); gold labels stand for the judge (a judge that is
always right, so a run costs no LLM call and agreement is gold accuracy). Both ways certify
whole-data-set agreement ``>= target`` at ``delta``; reported per way: judge labels bought for
calibration, the certified coverage on the calibration items, and on the held-out items the
coverage (share the workers decide) and the realised whole-data agreement (judge-decided items
agree); a violation is a held-out agreement below the target.  The sequential way is told
the held-out size as the volume it will classify (it weighs labels against coverage with it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from speculabel.bench.bargain import load_input
from speculabel.bench.finite import TASKS, gold_judge

WAYS = ("all", "sequential")


def bench_input(source: str, n_cal: int, n_held: int, *, target: float = 0.85,
                delta: float = 0.1, seeds: Sequence[int] = tuple(range(5)),
                first: int | None = None,
                say: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:
    """One row per way (see the module docstring), means and extremes over ``seeds``."""
    from speculabel.backends.registry import load_backend
    from speculabel.certify.api import calibrate
    from speculabel.tasks import load_task

    kind = source.partition(":")[0]
    task_name, specs = TASKS[kind]
    task = load_task(task_name)
    items, gold_list = load_input(source, n_cal + n_held)
    if len(items) < n_cal + n_held:
        raise ValueError(f"{source}: {len(items)} items, fewer than {n_cal} + {n_held}")
    gold = {str(it.id): g for it, g in zip(items, gold_list, strict=True)}
    judge = gold_judge(gold)
    rows = []
    for way in WAYS:
        runs: list[dict[str, Any]] = []
        for seed in seeds:
            perm = np.random.default_rng(1000 + seed).permutation(len(items))
            cal = [items[i] for i in perm[:n_cal]]
            held = [items[i] for i in perm[n_cal:n_cal + n_held]]
            workers = [load_backend(s) for s in specs]
            t0 = time.perf_counter()
            cert = calibrate(task=task, workers=workers, items=cal, judge=judge,
                             scope="dataset", target=target, delta=delta, seed=seed, buy=way,
                             first=first, volume=n_held if way == "sequential" else None)
            secs = time.perf_counter() - t0
            bought = int(cert.extra.get("labels_bought", n_cal))
            run = {"bought": bought, "certified_coverage": 1 - (cert.judge_call_rate or 1.0),
                   "seconds": secs}
            if cert.threshold is None:
                run.update(coverage=0.0, agreement=1.0)
            else:
                recs = cert.cascade(judge).classify(held)
                run.update(coverage=sum(r.decided_by == "workers" for r in recs) / len(held),
                           agreement=sum(r.label == gold[str(r.id)] for r in recs) / len(held))
            runs.append(run)
            say(f"{source} {way} seed {seed}: bought {bought} of {n_cal}, certified coverage "
                f"{run['certified_coverage']:.1%}, held-out coverage {run['coverage']:.1%}, "
                f"agreement {run['agreement']:.3f}, {secs:.0f} s")
        agree = np.array([r["agreement"] for r in runs])
        rows.append({
            "input": source, "calibration_items": n_cal, "held_out_items": n_held, "way": way,
            "target": target, "delta": delta, "seeds": len(runs), "workers": list(specs),
            "labels_bought_mean": float(np.mean([r["bought"] for r in runs])),
            "certified_coverage_mean": float(np.mean([r["certified_coverage"] for r in runs])),
            "held_out_coverage_mean": float(np.mean([r["coverage"] for r in runs])),
            "held_out_coverage_min": float(np.min([r["coverage"] for r in runs])),
            "agreement_mean": float(agree.mean()), "agreement_min": float(agree.min()),
            "violation_rate": float((agree < target).mean()),
            "total_judge_calls_mean": total_calls(runs, n_held),
            "seconds_median": float(np.median([r["seconds"] for r in runs]))})
    return rows


def total_calls(runs: Sequence[dict[str, Any]], n_held: int) -> float:
    """Judge calls of the whole job, calibration labels plus the held-out items the judge
    decides (the figure that says whether buying fewer labels paid), mean over the runs."""
    return float(np.mean([r["bought"] + n_held * (1 - r["coverage"]) for r in runs]))


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    def total(r: dict[str, Any]) -> float:
        return float(r["labels_bought_mean"]
                     + r["held_out_items"] * (1 - r["held_out_coverage_mean"]))

    head = ("| input | N | held out | way | labels bought (mean) | held-out coverage % (mean / "
            "min) | judge calls, calibration + held out (mean) | held-out agreement (mean / "
            "worst) | violations |\n|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {r['input']} | {r['calibration_items']} | {r['held_out_items']} | {r['way']} | "
             f"{r['labels_bought_mean']:.0f} | {100 * r['held_out_coverage_mean']:.1f} / "
             f"{100 * r['held_out_coverage_min']:.1f} | "
             f"{total(r):.0f}"
             f" | {r['agreement_mean']:.3f} / {r['agreement_min']:.3f} | {r['violation_rate']:.2f} |" for r in rows]
    return "\n".join([head, *lines])
