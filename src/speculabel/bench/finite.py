"""Adaptive runs on a file, both methods on the same items: how many judge calls, how close to
the target, how often below it.

Gold labels stand for the judge (a plain-Python judge that answers from them), so a run costs
no LLM call and 20 seeds take minutes; the workers are real (``vader``, ``similarity:minilm``,
``learner:minilm``).  For each input and seed:

* ``rank`` (:mod:`speculabel.adaptive.finite`, the default on a file): the seed draws the fit
  share and the certification sample;
* ``stream`` (:mod:`speculabel.adaptive.run`): the seed draws the processing order and the audit.

Each run reports its judge-call share and its realised whole-data agreement with the judge
(here: gold); the violation rate is the share of runs below the target (at most delta if the
guarantee holds).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.adaptive.finite import FiniteRun, FiniteState
from speculabel.adaptive.plan import AdaptiveSettings, order
from speculabel.adaptive.run import AdaptiveCascade
from speculabel.adaptive.state import AdaptiveState
from speculabel.backends.base import Backend, FunctionBackend
from speculabel.bench.bargain import load_input
from speculabel.io.votes import item_key
from speculabel.records import Item, Record
from speculabel.tasks import Task, load_task

TASKS = {"tweets": ("sentiment", ("vader", "learner:minilm")),
         "pairs": ("similar-ticket", ("similarity:minilm", "learner:minilm"))}
METHODS = ("rank", "stream")


def gold_judge(gold: dict[str, str]) -> Backend:
    """A judge that answers from the gold labels (certain of each)."""
    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        return [{gold[str(it.id)]: 1.0} for it in items]

    return FunctionBackend("gold", fn)


def _workers(specs: Sequence[str], learner: Mapping[str, Any] | None = None) -> list[Backend]:
    """The workers; ``learner``: options of the ``learner:`` worker (``finetune=True``, say)."""
    from speculabel.backends.registry import load_backend

    return [load_backend(s, **dict(learner or {})) if s.startswith("learner:") else load_backend(s)
            for s in specs]


def run_once(method: str, task: Task, specs: Sequence[str], items: Sequence[Item],
             judge: Backend, settings: AdaptiveSettings,
             learner: Mapping[str, Any] | None = None) -> list[Record]:
    """One adaptive run of ``method`` over ``items``; every record."""
    if method == "rank":
        run = FiniteRun(task, _workers(specs, learner), judge, settings, items,
                        FiniteState(None, len(items)), batch_size=32)
        return list(run.run())
    with tempfile.TemporaryDirectory(prefix="speculabel-bench-") as tmp:
        state = AdaptiveState.open(Path(tmp) / "state", settings, len(items))
        cascade = AdaptiveCascade(task, _workers(specs, learner), judge, state, batch_size=32)
        perm = order([item_key(task, it) for it in items], settings.seed)
        recs = list(cascade.run([(p, items[j]) for p, j in enumerate(perm)], 0))
        cascade.close()
        return recs


def bench_input(source: str, n_items: int, *, target: float = 0.85, delta: float = 0.1,
                seeds: Sequence[int] = tuple(range(20)), methods: Sequence[str] = METHODS,
                say: Callable[[str], None] = lambda m: None,
                learner: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per method: judge-call share (mean, max), realised agreement (mean, min),
    violation rate, seconds per run.  ``learner``: options of the ``learner:`` worker."""
    kind = source.partition(":")[0]
    task_name, specs = TASKS[kind]
    task = load_task(task_name)
    items, gold_list = load_input(source, n_items)
    gold = {str(it.id): g for it, g in zip(items, gold_list, strict=True)}
    judge = gold_judge(gold)
    rows = []
    for method in methods:
        shares, agree, secs = [], [], []
        for seed in seeds:
            s = AdaptiveSettings(target=target, delta=delta, seed=seed, method=method)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            recs = run_once(method, task, specs, items, judge, s, learner)
            secs.append(time.perf_counter() - t0)
            if sorted(str(r.id) for r in recs) != sorted(gold):
                raise RuntimeError(f"{method} seed {seed}: not every item exactly once")
            shares.append(sum(r.decided_by == "judge" for r in recs) / len(items))
            agree.append(sum(r.label == gold[str(r.id)] for r in recs) / len(items))
            say(f"{source} N={n_items} {method} seed {seed}: judge {shares[-1]:.1%}, "
                f"agreement {agree[-1]:.3f}")
        a = np.array(agree)
        rows.append({"input": source, "items": n_items, "method": method, "target": target,
                     "delta": delta, "seeds": len(seeds), "workers": list(specs),
                     "learner_options": dict(learner or {}),
                     "judge_share_mean": float(np.mean(shares)),
                     "judge_share_max": float(np.max(shares)),
                     "agreement_mean": float(a.mean()), "agreement_min": float(a.min()),
                     "violation_rate": float((a < target).mean()),
                     "seconds_per_run": float(np.median(secs))})
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    head = ("| input | N | method | judge calls % (mean / max) | realised agreement (mean / "
            "worst) | violations |\n|---|---|---|---|---|---|")
    lines = [f"| {r['input']} | {r['items']} | {r['method']} | {100 * r['judge_share_mean']:.1f}"
             f" / {100 * r['judge_share_max']:.1f} | {r['agreement_mean']:.3f} / "
             f"{r['agreement_min']:.3f} | {r['violation_rate']:.2f} |" for r in rows]
    return "\n".join([head, *lines])
