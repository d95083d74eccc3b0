"""Criterion 2 inside the bench: calibrated thresholds, and how often their promise fails.

From a bench's stored votes alone (no model call), with the judge as the reference: for each
worker set, the confident-majority threshold that ``speculabel calibrate`` would certify at each
agreement target (same exact binomial test), what that costs (judge-call rate, computed
speedup), and an empirical check of the guarantee: over many random calibration/test splits of
the bench items, the share of splits whose certified threshold gives agreement below the target
on all the items (the population the calibration part was drawn from).  That share should not
exceed ``delta``; the same share on the test part alone is reported too (it adds that part's
own sampling noise).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from speculabel.bench.simulate import VoteTable, simulate
from speculabel.certify.scores import agreement_flags, policy_scores
from speculabel.certify.splits import split_check
from speculabel.certify.threshold import calibrate_threshold
from speculabel.policy import ConfidentMajority

DEFAULT_TARGETS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
#: fixed-sequence stops at its first failed test: on a few hundred items, one confidently wrong
#: answer among the most confident ones ends it; fallback restarts further on (see speculabel.certify.threshold)
DEFAULT_METHODS = ("fixed-sequence", "fallback")


def rule_support(table: VoteTable, workers: Sequence[str], judge: str) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Each item's confident-majority support (``-inf`` where no majority) and whether the
    workers' majority label equals the judge's."""
    votes = [[table.votes[w][i] for w in workers] for i in range(table.n)]
    scores, labels = policy_scores(ConfidentMajority(0.0), votes, len(workers))
    return scores, agreement_flags(labels, table.labels(judge))


def calibrated_configs(
    table: VoteTable,
    judge: str,
    worker_sets: Sequence[Sequence[str]],
    *,
    targets: Sequence[float] = DEFAULT_TARGETS,
    delta: float = 0.1,
    methods: Sequence[str] = DEFAULT_METHODS,
    splits: int = 100,
    cal_frac: float = 0.5,
    seed: int = 0,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """For every test method, worker set and target: the certified threshold on all the bench
    items, the cascade it gives (simulated from stored votes), and the split check of the
    guarantee.  ``best[method][target]``: the fastest certified worker set."""
    rows: list[dict[str, Any]] = []
    support = {tuple(ws): rule_support(table, ws, judge) for ws in worker_sets}
    for method, ws, target in itertools.product(methods, worker_sets, targets):
        scores, agree = support[tuple(ws)]
        res = calibrate_threshold(scores, agree, target, delta, method=method)
        row: dict[str, Any] = {
            "method": method, "workers": list(ws), "target": target, "feasible": res.feasible,
            "threshold": res.threshold, "bound": res.bound, "shortfall": res.shortfall,
            "message": res.message(), "coverage": res.coverage,
            "agreement_decided": res.agreement, "judge_call_rate": 1.0 - res.coverage,
            "config": None,
        }
        if res.feasible and res.threshold is not None:
            sim = simulate(table, ws, judge, ConfidentMajority(res.threshold), gold=gold,
                           labels=labels)
            row["config"] = sim.to_json()
        row["split_check"] = split_check(scores, agree, target, delta, splits=splits,
                                         cal_frac=cal_frac, seed=seed, method=method)
        rows.append(row)
    best: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for method, target in itertools.product(methods, targets):
        ok = [r for r in rows if r["method"] == method and r["target"] == target
              and r["config"] is not None]
        if ok:
            best[method][f"{target:g}"] = max(ok, key=lambda r: _num(r["config"]["speedup"]))
    worst = max((r["split_check"]["violation_rate"] for r in rows), default=0.0)
    worst_pop = max((r["split_check"]["population_violation_rate"] for r in rows), default=0.0)
    return {
        "reference": judge, "rule": "confident-majority", "delta": delta,
        "methods": list(methods), "targets": list(targets), "splits": splits,
        "cal_frac": cal_frac, "n": table.n, "rows": rows, "best": best,
        "max_violation_rate": worst, "max_population_violation_rate": worst_pop,
        "guarantee_held": worst_pop <= delta,
    }


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return -math.inf
    return v if math.isfinite(v) else -math.inf
