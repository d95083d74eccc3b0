"""Step 2 of a bench: every number of the report from the stored votes alone.

Every model against every other model and against gold, every worker pair and triple under
every rule and threshold (with each model taken as the judge in turn), the cost of each
configuration as it would run, the Pareto front, and Criterion 2 with a guarantee.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from speculabel.bench.manifest import DEFAULT_THRESHOLDS
from speculabel.bench.metrics import agreement, agreement_matrix, clean, pareto_front
from speculabel.bench.simulate import SimResult, VoteTable, model_summary, simulate
from speculabel.policy import ConfidentMajority, Majority, Policy, Unanimous

TARGET_AGREEMENT = 0.8


def policies(thresholds: Sequence[float]) -> list[Policy]:
    """The rules the bench sweeps: majority, unanimous, confident-majority at each threshold."""
    out: list[Policy] = [Majority(), Unanimous()]
    out.extend(ConfidentMajority(t) for t in thresholds)
    return out


def worker_sets(models: Sequence[str], judge: str, table: VoteTable) -> list[tuple[str, ...]]:
    """Every pair and triple of the other models, cheapest first within each set."""
    others = [m for m in models if m != judge]
    cost = {m: sum(table.latency(m)) for m in others}
    sets: list[tuple[str, ...]] = []
    for r in (2, 3):
        for combo in itertools.combinations(others, r):
            sets.append(tuple(sorted(combo, key=lambda m: (cost[m], m))))
    return sets


MODES = ((False, False), (False, True), (True, False), (True, True))  # (parallel, early_exit)


def sweep(
    table: VoteTable,
    judge: str,
    thresholds: Sequence[float],
    *,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
) -> list[SimResult]:
    """Every worker pair and triple x every rule x (sequential/parallel, with/without early exit).

    Early exit matters only for triples, so pairs get the two modes without it.
    """
    out: list[SimResult] = []
    for workers in worker_sets(table.models, judge, table):
        for pol in policies(thresholds):
            for parallel, early in MODES:
                if early and len(workers) != 3:
                    continue
                out.append(
                    simulate(table, workers, judge, pol, parallel=parallel, early_exit=early,
                             gold=gold, labels=labels)
                )
    return out


def select_best(
    results: Sequence[SimResult], k: int = 3, target: float = TARGET_AGREEMENT,
    parallel: bool = False,
) -> tuple[list[SimResult], str]:
    """The configurations to measure, and how they were chosen.

    Among configurations in the given mode (sequential by default; the best early-exit variant
    of each worker set and rule), the top ``k`` by speedup whose end-to-end agreement with the
    judge is at least ``target``; when none reaches it, the top ``k`` by end-to-end agreement.
    """
    best: dict[tuple[tuple[str, ...], str], SimResult] = {}
    for r in results:
        if r.parallel != parallel:
            continue
        key = (r.workers, r.rule)
        if key not in best or r.speedup > best[key].speedup:
            best[key] = r
    # Rules that take exactly the same decisions with the same workers are one cascade: keep
    # the simplest (majority, then unanimous, then the lowest threshold).
    same: dict[tuple[Any, ...], SimResult] = {}
    for r in sorted(best.values(), key=_rule_order):
        sig = (r.workers, r.early_exit, tuple(r.decided), tuple(r.final_labels))
        same.setdefault(sig, r)
    cands = list(same.values())
    ok = [r for r in cands if r.e2e_agreement >= target]
    if ok:
        ok.sort(key=lambda r: (-r.speedup, -r.e2e_agreement, r.key))
        return ok[:k], (
            f"top {k} by speedup among configurations with end-to-end agreement >= {target:g} "
            f"with the judge ({'parallel' if parallel else 'sequential'} workers)"
        )
    cands.sort(key=lambda r: (-r.e2e_agreement, -r.speedup, r.key))
    return cands[:k], (
        f"no configuration reaches end-to-end agreement {target:g} with the judge: "
        f"top {k} by end-to-end agreement instead"
    )


def _rule_order(r: SimResult) -> tuple[int, float]:
    if r.rule == "majority":
        return (0, 0.0)
    if r.rule == "unanimous":
        return (1, 0.0)
    return (2, float(r.rule.split("@", 1)[1]) if "@" in r.rule else 0.0)



def analyse(
    table: VoteTable,
    judge: str,
    *,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    all_judges: bool = True,
    target: float = TARGET_AGREEMENT,
) -> dict[str, Any]:
    """Every number of the report, from the vote table alone (JSON-ready, NaN as null).

    Criterion 2 with a guarantee (certified thresholds) is a section of its own:
    :func:`speculabel.bench.certified.certified`."""
    if judge not in table.votes:
        raise ValueError(f"judge {judge!r} is not among the models {table.models}")
    if len(table.models) < 3:
        raise ValueError("a bench needs at least three models: two workers and a judge")
    has_gold = gold is not None and any(g is not None for g in gold)
    g = gold if has_gold else None
    models = {m: model_summary(table, m, g, labels) for m in table.models}
    for m in table.models:
        models[m]["agreement_with_judge"] = agreement(table.labels(m), table.labels(judge))
    matrix = agreement_matrix({m: table.labels(m) for m in table.models})

    results = sweep(table, judge, thresholds, gold=g, labels=labels)
    selected, how = select_best(results, target=target)
    seq = [r for r in results if not r.parallel]
    front = pareto_front([(r.judge_call_rate, r.e2e_agreement) for r in seq])
    front_keys = [seq[i].key for i in front]

    by_judge: dict[str, Any] = {}
    if all_judges:
        for j in table.models:
            rs = results if j == judge else sweep(table, j, thresholds, gold=g, labels=labels)
            sel, how_j = select_best(rs, target=target)
            by_judge[j] = {
                "selected": [r.to_json() for r in sel],
                "how": how_j,
                "configs": [r.to_json() for r in rs] if j != judge else "see configs",
            }

    judge_summary = models[judge]
    out = {
        "judge": judge,
        "n": table.n,
        "labels": list(labels) if labels else None,
        "has_gold": has_gold,
        "thresholds": list(thresholds),
        "target_agreement": target,
        "models": models,
        "agreement_matrix": matrix,
        "judge_alone": {
            "latency_mean_s": judge_summary["latency_mean_s"],
            "latency_p50_s": judge_summary["latency_p50_s"],
            "latency_p95_s": judge_summary["latency_p95_s"],
            "cpu_mean_s": judge_summary["cpu_mean_s"],
            "accuracy": judge_summary.get("accuracy"),
            "macro_recall": judge_summary.get("macro_recall"),
        },
        "configs": [r.to_json() for r in results],
        "pareto_front": front_keys,
        "selected": [r.to_json() for r in selected],
        "selection": how,
        "by_judge": by_judge,
    }
    return clean(out)


def to_measure(analysis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The selected configurations, plus the fastest certified one per target (so the report
    shows Criterion 2's measured speedup too)."""
    configs = list(analysis.get("selected") or [])
    for key, row in ((analysis.get("certified") or {}).get("best") or {}).items():
        cfg = row.get("held")
        # a rank cut (whole-data targets) is no threshold rule a live cascade replays
        if cfg and cfg.get("measurable", True) and cfg["key"] not in {c["key"] for c in configs}:
            configs.append({**cfg, "certified_target": key})
    return configs


def attach_streams(analysis: dict[str, Any], paths: Sequence[Path] | Path | None) -> None:
    """Put adaptive-run stream results (JSON from ``make bench-stream``) into the report."""
    if paths is None:
        return
    streams: list[dict[str, Any]] = []
    for path in [paths] if isinstance(paths, Path) else paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"stream file {path} not found (run make bench-stream "
                                    "first)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        missing = {"settings", "runs", "judge_call_rate"} - set(data)
        if missing:
            raise ValueError(
                f"{path}: not an adaptive stream result (no {', '.join(sorted(missing))})")
        streams.append(clean({**data, "file": str(path)}))
    if streams:
        analysis["streams"] = [*analysis.get("streams", []), *streams]
