"""Certified cascades in the bench: whole-data targets on the whole input, the rest on halves.

The bench items are split once (seeded) into three disjoint shares:

* **fit** (``fit_items``, 300 by default): workers that learn are fitted on it (on the judge's
  labels for the judge-referenced targets, on gold for non-inferiority), then frozen; these
  items are used for nothing else;
* **certify** and **held-out** (the rest, halved).

Whole-data-set agreement with the judge 0.80 / 0.85 / 0.90 (scope ``dataset``) is certified as a
user of ``classify --adaptive`` now gets it: on certify + held-out together (the bench's whole
evaluation input), a rank cut certified transductively by buying judge labels in batches
(:mod:`speculabel.bench.transductive`); the numbers (judge calls including the labels bought,
coverage, agreement, gold accuracy, computed speedup) are those of that run on that input, and
the guarantee check repeats it over ``splits`` seeds of the label draw for the fastest
certified worker set per target (the one reported; a run is a sequential certification, too
slow to repeat for every set).

Agreement on the workers' share 0.90 (``workers``) and gold accuracy at most 0.01 / 0.02 below
the judge's (``non-inferior``) still certify the confident-majority threshold on the certify
half and measure on the held-out half: they are inductive statements (about items like these,
not about one file), for which no transductive test exists here yet.  Their guarantee check:
``splits`` random re-splits of certify + held-out into halves, certify on one and check on the
other and on both together (the population): the share of splits that miss the target must not
exceed ``delta``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from speculabel.bench.metrics import accuracy, clean
from speculabel.bench.simulate import VoteTable, simulate
from speculabel.bench.transductive import RankedInput, certified_dataset, check_dataset
from speculabel.certify.scope import Scope
from speculabel.certify.scores import agreement_flags, policy_scores
from speculabel.certify.splits import achieved, split_check
from speculabel.certify.threshold import calibrate_threshold
from speculabel.policy import ConfidentMajority

TARGETS: tuple[tuple[Scope, float], ...] = (
    ("dataset", 0.80), ("dataset", 0.85), ("dataset", 0.90), ("workers", 0.90),
    ("non-inferior", 0.01), ("non-inferior", 0.02),
)


def three_way_split(n: int, fit_items: int, seed: int) -> dict[str, list[int]]:
    """Disjoint fit / certify / held-out indices (seeded; certify and held-out halve the rest)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    fit = sorted(order[:fit_items])
    rest = order[fit_items:]
    half = len(rest) // 2
    return {"fit": fit, "certify": sorted(rest[:half]), "held": sorted(rest[half:])}


def worker_sets(workers: Sequence[str], table: VoteTable) -> list[tuple[str, ...]]:
    """Every set of one to three workers, cheapest first within each set."""
    cost = {m: sum(table.latency(m)) for m in workers}
    out: list[tuple[str, ...]] = []
    for r in (1, 2, 3):
        for combo in itertools.combinations(workers, r):
            out.append(tuple(sorted(combo, key=lambda m: (cost[m], m))))
    return out


def _evidence(table: VoteTable, ws: Sequence[str], judge: str, gold: Sequence[str | None] | None,
              scope: Scope) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scores, agreement with the scope's reference, and the judge's correctness on gold."""
    votes = [[table.votes[w][i] for w in ws] for i in range(table.n)]
    scores, labels = policy_scores(ConfidentMajority(0.0), votes, len(ws))
    judge_labels = table.labels(judge)
    if scope == "non-inferior":
        assert gold is not None
        return scores, agreement_flags(labels, gold), agreement_flags(judge_labels, gold)
    return scores, agreement_flags(labels, judge_labels), None


def certified(
    tables: Mapping[str, VoteTable],
    judge: str,
    workers: Mapping[str, Sequence[str]],
    split: Mapping[str, Sequence[int]],
    *,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
    targets: Sequence[tuple[Scope, float]] = TARGETS,
    delta: float = 0.1,
    splits: int = 100,
    seed: int = 0,
    method: str = "fixed-sequence",
    fit_source: str | None = None,
) -> dict[str, Any]:
    """Every worker set x target: certified threshold (a rank cut for ``dataset``), results,
    split check (the module docstring says on which items).

    ``tables["judge"]`` / ``tables["gold"]``: every model's vote on every bench item, the
    learning workers fitted on the judge's / gold labels; ``workers[reference]``: the workers
    to combine.  ``best[key]``: the fastest certified set per target (computed speedup).
    """
    has_gold = gold is not None and any(g is not None for g in gold)
    rows: list[dict[str, Any]] = []
    cert, held = list(split["certify"]), list(split["held"])
    pool = cert + held
    ranked: dict[tuple[str, ...], RankedInput] = {}
    for scope, target in targets:
        if scope == "non-inferior" and not has_gold:
            continue
        ref = "gold" if scope == "non-inferior" else "judge"
        table = tables[ref]
        g = list(gold) if has_gold and gold is not None else None
        for ws in worker_sets(workers[ref], table):
            if scope == "dataset":
                if ws not in ranked:
                    ranked[ws] = RankedInput(table, ws, judge, sorted(pool), seed)
                # checked over seeds below, for the set reported per target only
                rows.append(certified_dataset(table, ws, judge, sorted(pool), target, delta,
                                              gold=g, splits=0, seed=seed, ranked=ranked[ws]))
                continue
            scores, agree, jr = _evidence(table, ws, judge, g, scope)
            res = calibrate_threshold(scores[cert], agree[cert], target, delta, method=method,
                                      scope=scope, judge_right=None if jr is None else jr[cert])
            row: dict[str, Any] = {
                "scope": scope, "target": target, "reference": ref, "workers": list(ws),
                "feasible": res.feasible, "threshold": res.threshold,
                "certify": {"items": len(cert), "coverage": res.coverage,
                            "estimate": res.estimate, "bound": res.bound,
                            "message": res.message()},
                "held": None,
            }
            if res.feasible and res.threshold is not None:
                sub = table.subset(held)
                sim = simulate(sub, list(ws), judge, ConfidentMajority(res.threshold),
                               gold=[g[i] for i in held] if g else None, labels=labels)
                acc = scores[held] >= res.threshold
                value = achieved(scope, acc, agree[held], None if jr is None else jr[held])
                row["held"] = {**sim.to_json(), "items": len(held), "value": value,
                               "judge_accuracy": accuracy(sub.labels(judge), [g[i] for i in held])
                               if g else None}
            pool_jr = None if jr is None else jr[pool]
            row["split_check"] = split_check(scores[pool], agree[pool], target, delta,
                                             splits=splits, cal_frac=0.5, seed=seed,
                                             method=method, scope=scope, judge_right=pool_jr)
            rows.append(row)
    best: dict[str, dict[str, Any]] = {}
    for scope, target in targets:
        ok = [r for r in rows if r["scope"] == scope and r["target"] == target and r["held"]]
        if ok:
            best[f"{scope}@{target:g}"] = top = max(ok, key=lambda r: _num(r["held"]["speedup"]))
            if scope == "dataset":
                top["split_check"] = check_dataset(ranked[tuple(top["workers"])], target, delta,
                                                   splits, seed)
    by_scope: dict[str, float] = {}
    for r in rows:
        s, v = r["scope"], r["split_check"]["population_violation_rate"]
        if v is not None:
            by_scope[s] = max(by_scope.get(s, 0.0), v)
    return clean({
        "delta": delta, "method": method, "splits": splits, "targets": [list(t) for t in targets],
        "split_sizes": {k: len(v) for k, v in split.items()}, "rows": rows, "best": best,
        "dataset_items": len(pool),
        "fit_source": fit_source or f"{len(split.get('fit', []))} of the bench items",
        "max_violation_by_scope": by_scope,
        "guarantee_held": all(v <= delta for v in by_scope.values()),
    })


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return -math.inf
    return v if math.isfinite(v) else -math.inf
