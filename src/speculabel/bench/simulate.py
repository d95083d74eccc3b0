"""Replaying a cascade over stored votes: who decides each item, the final label, the cost.

A :class:`VoteTable` holds every model's :class:`Vote` for the same items, with its CPU time.
Nothing here calls a model, so a new rule, threshold or judge costs only arithmetic.

A cascade's cost per item (see :func:`simulate`), the same as :class:`speculabel.cascade.Cascade`
charges its records:

* sequential workers: the sum of the latencies of the workers consulted;
* parallel workers: the latency of the slowest worker consulted (assumes each worker has its own
  cores; on a small machine parallel workers contend and the real time is higher);
* early exit (three workers): the first two workers are asked; the third only when the rule
  does not accept the first two votes.  In parallel mode the first two run at the same time,
  then the third if needed: ``max(first two) + third``;
* plus the judge's latency when the judge is called;
* CPU time is always the sum over every model consulted.

Speedup = (judge labelling every item alone: total time) / (cascade: total time), for wall time
and for CPU time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from speculabel.bench.metrics import (
    NAN,
    Label,
    accuracy,
    agreement,
    coverage,
    judge_call_rate,
    macro_recall,
    mean,
    percentile,
    recall_per_label,
    speedup,
)
from speculabel.cascade.decide import Rules, decide_batch, settle
from speculabel.policy import Decision, Policy
from speculabel.records import Item, Vote


@dataclass
class VoteTable:
    """Every model's vote for the same ``n`` items (aligned lists), with CPU seconds per vote.

    ``cpu_s[model]`` may be missing; then the vote's latency stands in for its CPU time.
    """

    votes: dict[str, list[Vote]]
    cpu_s: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.votes.values()}
        if len(lengths) > 1:
            raise ValueError(f"models have different numbers of votes: {sorted(lengths)}")
        for m, c in self.cpu_s.items():
            if m in self.votes and len(c) != len(self.votes[m]):
                raise ValueError(f"{m}: {len(c)} cpu times for {len(self.votes[m])} votes")

    @property
    def models(self) -> list[str]:
        return list(self.votes)

    @property
    def n(self) -> int:
        return len(next(iter(self.votes.values()))) if self.votes else 0

    def labels(self, model: str) -> list[Label]:
        return [v.label for v in self.votes[model]]

    def latency(self, model: str) -> list[float]:
        return [float(v.latency_s) for v in self.votes[model]]

    def cpu(self, model: str) -> list[float]:
        if model in self.cpu_s:
            return list(self.cpu_s[model])
        return self.latency(model)

    def subset(self, idx: Sequence[int]) -> VoteTable:
        """The same table restricted to some items (in the given order)."""
        return VoteTable(
            {m: [vs[i] for i in idx] for m, vs in self.votes.items()},
            {m: [cs[i] for i in idx] for m, cs in self.cpu_s.items()},
        )


def model_summary(
    table: VoteTable, model: str, gold: Sequence[Label] | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One model's quality and cost numbers over the table."""
    lab = table.labels(model)
    lat = table.latency(model)
    cpu = table.cpu(model)
    out: dict[str, Any] = {
        "model": model,
        "n": len(lab),
        "abstained": sum(x is None for x in lab),
        "label_counts": {k: lab.count(k) for k in sorted({x for x in lab if x is not None})},
        "latency_mean_s": mean(lat),
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "cpu_mean_s": mean(cpu),
        "cpu_measured": model in table.cpu_s,
    }
    if gold is not None:
        out["accuracy"] = accuracy(lab, gold)
        out["macro_recall"] = macro_recall(lab, gold, labels)
        out["recall_per_label"] = recall_per_label(lab, gold, labels)
    return out


# ---------------------------------------------------------------- cascade simulation


def decide_with_early_exit(policy: Policy, votes: Sequence[Vote]) -> tuple[Decision, int]:
    """The cascade's early exit: with three workers, decide on the first two votes first.

    Mirrors :class:`speculabel.cascade.Cascade`: the rule sees the first two votes (with
    ``n_workers=3``, as if the third abstained); when it accepts them the third worker is never
    asked, otherwise it is asked and the rule sees all three.  With fewer than three workers
    early exit changes nothing.  Returns the decision and the number of workers asked.
    """
    n = len(votes)
    if n != 3:
        return policy.decide(votes, n), n
    d = policy.decide(votes[:2], n)
    if d.accepted:
        return d, 2
    return policy.decide(votes, n), 3


@dataclass
class SimResult:
    """One cascade configuration simulated over a vote table (see :func:`simulate`)."""

    judge: str
    workers: tuple[str, ...]
    rule: str
    parallel: bool
    early_exit: bool
    n: int
    coverage: float
    judge_call_rate: float
    agreement_decided: float  # workers' label vs judge's, on the items the workers decided
    e2e_agreement: float  # final label vs judge's label, all items
    e2e_accuracy: float | None
    e2e_macro_recall: float | None
    worker_calls_per_item: float
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    cpu_mean_s: float
    judge_latency_mean_s: float
    judge_cpu_mean_s: float
    speedup: float  # wall: judge alone / cascade
    cpu_speedup: float
    final_labels: list[Label] = field(default_factory=list, repr=False)
    decided: list[bool] = field(default_factory=list, repr=False)
    item_latency_s: list[float] = field(default_factory=list, repr=False)

    @property
    def key(self) -> str:
        mode = ("parallel" if self.parallel else "sequential") + (
            "+early-exit" if self.early_exit else ""
        )
        return f"{'+'.join(self.workers)} | {self.rule} | {mode} | judge {self.judge}"

    def to_json(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in (
                "judge", "rule", "parallel", "early_exit", "n", "coverage", "judge_call_rate",
                "agreement_decided", "e2e_agreement", "e2e_accuracy", "e2e_macro_recall",
                "worker_calls_per_item", "latency_mean_s", "latency_p50_s", "latency_p95_s",
                "cpu_mean_s", "judge_latency_mean_s", "judge_cpu_mean_s", "speedup", "cpu_speedup",
            )
        }
        d["workers"] = list(self.workers)
        d["key"] = self.key
        return d


def simulate(
    table: VoteTable,
    workers: Sequence[str],
    judge: str,
    policy: Policy,
    *,
    parallel: bool = False,
    early_exit: bool = False,
    gold: Sequence[Label] | None = None,
    labels: Sequence[str] | None = None,
) -> SimResult:
    """Replay a cascade over stored votes: who decides each item, the final label, the cost.

    Workers are consulted in the order given (put the cheapest first: under early exit the last
    one is asked only when needed).
    """
    if not workers:
        raise ValueError("a cascade needs at least one worker")
    if judge in workers:
        raise ValueError(f"{judge} cannot be both judge and worker")
    n = table.n
    wv = [table.votes[w] for w in workers]
    wc = [table.cpu(w) for w in workers]
    jv = table.votes[judge]
    jl = table.latency(judge)
    jc = table.cpu(judge)
    judge_labels = [v.label for v in jv]

    # the one decide core, as a live cascade runs it (every vote charged its recorded latency)
    rules = Rules(policy, len(workers), parallel, early_exit and len(workers) == 3,
                  free_cached=False)
    n_first = 2 if rules.early_exit else len(workers)
    items = [Item(str(i), {}) for i in range(n)]
    votes = [[wv[k][i] for k in range(n_first)] for i in range(n)]
    records, escalations = decide_batch(items, votes, rules,
                                        lambda idx: [wv[2][i] for i in idx])
    for esc in escalations:
        records[esc.index] = settle(esc, jv[esc.index], rules)
    final: list[Label] = []
    decided: list[bool] = []
    lat: list[float] = []
    cpu: list[float] = []
    calls = 0
    for i, rec in enumerate(records):
        assert rec is not None
        used = len(votes[i])
        calls += used
        c = sum(wc[k][i] for k in range(used))
        by_workers = rec.decided_by == "workers"
        if not by_workers:
            c += jc[i]
        final.append(rec.label)
        decided.append(by_workers)
        lat.append(rec.latency_s)
        cpu.append(c)

    dec_idx = [i for i in range(n) if decided[i]]
    judge_total = sum(jl)
    judge_cpu_total = sum(jc)
    return SimResult(
        judge=judge,
        workers=tuple(workers),
        rule=policy.describe(),
        parallel=parallel,
        early_exit=early_exit,
        n=n,
        coverage=coverage(decided),
        judge_call_rate=judge_call_rate([not d for d in decided]),
        agreement_decided=agreement(
            [final[i] for i in dec_idx], [judge_labels[i] for i in dec_idx]
        ),
        e2e_agreement=agreement(final, judge_labels),
        e2e_accuracy=accuracy(final, gold) if gold is not None else None,
        e2e_macro_recall=macro_recall(final, gold, labels) if gold is not None else None,
        worker_calls_per_item=calls / n if n else NAN,
        latency_mean_s=mean(lat),
        latency_p50_s=percentile(lat, 50),
        latency_p95_s=percentile(lat, 95),
        cpu_mean_s=mean(cpu),
        judge_latency_mean_s=mean(jl),
        judge_cpu_mean_s=mean(jc),
        speedup=speedup(judge_total, sum(lat)) if n else NAN,
        cpu_speedup=speedup(judge_cpu_total, sum(cpu)) if n else NAN,
        final_labels=final,
        decided=decided,
        item_latency_s=lat,
    )
