"""The bench's whole-data targets, certified as a user now gets them: on the whole input.

A user who asks for whole-data agreement with the judge on a file gets a transductive
certificate about that very file (``classify --adaptive``, :mod:`speculabel.adaptive.finite`):
the items are ranked by the workers' soft vote (ties broken by a keyed hash of the id), judge
labels are bought in small batches until a rank cut is certified
(:func:`speculabel.certify.sequential.sequential_certify`, rule ``reuse``), the workers decide
the kept items that were not bought and the judge every other one.  The bench replays exactly
that on its evaluation input (every non-fit item), with the judge's stored labels as the
labeller, and reports what the run costs: judge calls *including the labels bought*, coverage,
realised agreement with the judge, gold accuracy, and the speedup computed from the stored
per-item costs (workers asked in sequence on every item, the judge on the items it labels).

The guarantee check: the certificate is about the draw of the labels, so the run is repeated
over ``splits`` seeds of that draw; the share of runs whose realised whole-data agreement over
the input misses the target must be at most ``delta``.  Each run costs a sequential
certification (a fraction of a second), so the bench checks the worker set it reports per target
(:func:`check_dataset`), not all of them (``splits=0`` leaves a row unchecked).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speculabel.bench.metrics import accuracy
from speculabel.bench.simulate import VoteTable
from speculabel.certify.rank import make_cut, rank_order
from speculabel.certify.scores import policy_scores
from speculabel.certify.sequential import sequential_certify
from speculabel.policy import WeightedVote

#: the order's score: as :mod:`speculabel.adaptive.finite` ranks (soft vote, equal weights)
ORDER = WeightedVote({}, 0.0)
ORDER_NAME = "soft vote, ties by BLAKE2b(id, tie_key)"


def tie_key(seed: int) -> str:
    return f"speculabel-bench-{seed}"


class RankedInput:
    """One worker set's view of the evaluation input: its order, labels and costs."""

    def __init__(self, table: VoteTable, ws: Sequence[str], judge: str, pool: Sequence[int],
                 seed: int) -> None:
        self.pool = list(pool)
        self.ids = [str(i) for i in self.pool]
        votes = [[table.votes[w][i] for w in ws] for i in self.pool]
        self.scores, labels = policy_scores(ORDER, votes, len(ws))
        # an item the rule does not accept even at threshold 0 can never be the workers'
        self.labels = [lab if np.isfinite(s) else None
                       for s, lab in zip(self.scores, labels, strict=True)]
        self.key = tie_key(seed)
        self.order = rank_order(self.scores, self.ids, self.key)
        jl = table.labels(judge)
        self.judge = [jl[i] for i in self.pool]
        self.ordered_ids = [self.ids[int(k)] for k in self.order]
        self.ordered_labels = [self.labels[int(k)] for k in self.order]
        self.where = {iid: k for k, iid in enumerate(self.ids)}
        self.w_lat = np.array([sum(table.latency(w)[i] for w in ws) for i in self.pool])
        self.w_cpu = np.array([sum(table.cpu(w)[i] for w in ws) for i in self.pool])
        self.j_lat = np.array([table.latency(judge)[i] for i in self.pool])
        self.j_cpu = np.array([table.cpu(judge)[i] for i in self.pool])

    def buy(self, ids: list[str]) -> list[str | None]:
        return [self.judge[self.where[i]] for i in ids]

    def run(self, target: float, delta: float, seed: int) -> tuple[Any, np.ndarray]:
        """One certified run: the certificate and the mask of items the workers decide."""
        res = sequential_certify(self.ordered_ids, self.ordered_labels, self.buy, target, delta,
                                 rule="reuse", seed=seed)
        kept = np.zeros(len(self.pool), dtype=bool)
        for k in self.order[:res.certificate.cut]:
            iid = self.ids[int(k)]
            kept[int(k)] = self.labels[int(k)] is not None and iid not in res.labels
        return res, kept

    def agreement(self, kept: np.ndarray) -> float:
        """Realised whole-data agreement with the judge when the workers decide ``kept``."""
        miss = sum(1 for k in np.flatnonzero(kept) if self.labels[k] != self.judge[k])
        return 1.0 - miss / len(self.pool) if self.pool else 1.0


def certified_dataset(table: VoteTable, ws: Sequence[str], judge: str, pool: Sequence[int],
                      target: float, delta: float, *, gold: Sequence[str | None] | None,
                      splits: int, seed: int, ranked: RankedInput | None = None
                      ) -> dict[str, Any]:
    """One worker set x one whole-data target: the run at ``seed``, and the guarantee check
    over ``splits`` further seeds of the label draw (the row of :mod:`speculabel.bench.certified`).
    """
    r = ranked or RankedInput(table, ws, judge, pool, seed)
    n = len(r.pool)
    res, kept = r.run(target, delta, seed)
    c = res.certificate
    feasible = c.cut > 0
    cut = make_cut(r.scores, r.ids, r.key, c.cut) if feasible else None
    row: dict[str, Any] = {
        "scope": "dataset", "target": target, "reference": "judge", "workers": list(ws),
        "feasible": feasible, "threshold": cut.score if cut else None,
        "cut": {"kept": c.cut, "n_total": n, "order": ORDER_NAME, "tie_key": r.key,
                "boundary_score": cut.score if cut else None},
        "certify": {"items": n, "method": "sequential (rule reuse), exact hypergeometric",
                    "labels_bought": len(res.labels), "coverage": float(kept.mean()) if n else 0,
                    "estimate": None, "bound": c.upper,
                    "message": c.statement() if feasible else
                    f"no rank cut certified after {len(res.labels)} labels"},
        "held": None,
    }
    if feasible:
        row["held"] = _outcome(r, ws, judge, kept, gold, len(res.labels))
    row["split_check"] = check_dataset(r, target, delta, splits, seed)
    return row


def check_dataset(r: RankedInput, target: float, delta: float, splits: int,
                  seed: int) -> dict[str, Any]:
    """The run repeated over ``splits`` further seeds of the label draw (seed + 1 ...): the share
    whose realised whole-data agreement misses ``target`` (None when ``splits`` is 0)."""
    n = len(r.pool)
    vals, calls, certified_runs = [], [], 0
    for k in range(splits):
        rk, kk = r.run(target, delta, seed + 1 + k)
        certified_runs += rk.certificate.cut > 0
        vals.append(r.agreement(kk))
        calls.append(1.0 - float(kk.mean()) if n else 1.0)
    missed = sum(v < target - 1e-12 for v in vals)
    return {
        "scope": "dataset", "splits": splits, "what": "seeds of the label draw",
        "calibration_items": n, "test_items": n,
        "feasible_share": certified_runs / splits if splits else None,
        "violation_rate": None,  # no held half: the whole input is certified and checked
        "population_violation_rate": missed / splits if splits else None,
        "mean_threshold": None,
        "mean_test_coverage": 1.0 - float(np.mean(calls)) if calls else None,
        "mean_judge_call_rate": float(np.mean(calls)) if calls else None,
        "mean_test_value": float(np.mean(vals)) if vals else None,
        "worst_test_value": min(vals) if vals else None,
    }


def _outcome(r: RankedInput, ws: Sequence[str], judge: str, kept: np.ndarray,
             gold: Sequence[str | None] | None, bought: int) -> dict[str, Any]:
    """The run's numbers in the shape of a simulated cascade (:class:`SimResult` JSON)."""
    n = len(r.pool)
    final = [r.labels[k] if kept[k] else r.judge[k] for k in range(n)]
    lat = r.w_lat + np.where(kept, 0.0, r.j_lat)
    cpu = r.w_cpu + np.where(kept, 0.0, r.j_cpu)
    dec = np.flatnonzero(kept)
    rule = f"rank cut: first {int(kept.sum())} of {n} ({ORDER_NAME})"
    g = [gold[i] for i in r.pool] if gold is not None else None
    return {
        "judge": judge, "rule": rule, "parallel": False, "early_exit": False, "n": n,
        "items": n, "coverage": float(kept.mean()), "judge_call_rate": 1.0 - float(kept.mean()),
        "labels_bought": bought,
        "agreement_decided": float(np.mean([r.labels[k] == r.judge[k] for k in dec]))
        if len(dec) else None,
        "e2e_agreement": r.agreement(kept), "value": r.agreement(kept),
        "e2e_accuracy": accuracy(final, g) if g else None,
        "judge_accuracy": accuracy(r.judge, g) if g else None,
        "worker_calls_per_item": float(len(ws)),
        "latency_mean_s": float(lat.mean()), "cpu_mean_s": float(cpu.mean()),
        "judge_latency_mean_s": float(r.j_lat.mean()), "judge_cpu_mean_s": float(r.j_cpu.mean()),
        "speedup": float(r.j_lat.sum() / lat.sum()) if lat.sum() > 0 else None,
        "cpu_speedup": float(r.j_cpu.sum() / cpu.sum()) if cpu.sum() > 0 else None,
        "workers": list(ws), "key": f"{'+'.join(ws)} | {rule} | sequential | judge {judge}",
        # a rank cut is no threshold rule a live cascade can replay item by item
        "measurable": False,
    }
