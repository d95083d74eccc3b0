"""Head-to-head with TRACER (``tracer-llm``) on intent routing: the same MiniLM embeddings, the
same teacher labels (gold), the same labelled budgets, the same targets.

For each budget (labelled items drawn at random from Banking77's train split) and seed:

* **speculabel**: :func:`speculabel.calibrate` with one ``learner:minilm`` worker (its
  embedder reads the cached embeddings), scope ``workers`` (agreement among the items the
  worker decides >= target, w.p. >= 1 - delta): exactly the product's path, defaults included
  (C, class weighting and the weight of a nearest-neighbour vote by cross-validation, the fit
  share chosen among the many-label candidates 0.5/0.6/0.7/0.75/0.8 at delta/5 each).  The
  certified cascade then decides test items whose score reaches the threshold.
* **TRACER**: ``tracer.fit.pipeline.fit_frontier`` (what ``tracer.fit`` runs, without writing
  artifacts) at the same targets and ``alpha = delta``, its model zoo less gradient boosting
  (``skip=("gbt",)``: the slowest by far on many classes); its deployed pipeline routes the
  test items.

Measured on the test split: coverage (share decided by the cheap model), covered agreement
(with the teacher among those), whole-data agreement (teacher-decided items agree), violation
(covered agreement on the test split below the target: the test split is itself a sample, so
this also counts its own sampling noise), refusal (nothing certified), fit time (speculabel: the
draw's first ``calibrate`` call, which fits every head: cross-validation and five fit shares,
then certifies; the other targets reuse those deterministic fits; TRACER: one
``fit_frontier`` for all targets at once; ``cpu_s``: the CPU seconds of that call in this
process, which a shared machine's load does not inflate as it does the wall time; ``load``: the
1-minute load average as the draw ended).  ``speculabel-margin``: the same heads gated by the
margin (``policy="confident-margin"``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from speculabel.bench.intents import IntentSplit

Row = dict[str, Any]


class CachedEmbedder:
    """An embedder that looks texts up in precomputed embeddings (what the learner calls)."""

    name = "all-MiniLM-L6-v2"  # the same vectors as MiniLMEmbedder, computed once

    def __init__(self, *splits: IntentSplit) -> None:
        self._by_text = {t: s.x[i] for s in splits for i, t in enumerate(s.texts)}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._by_text[t] for t in texts])


def _digest(kind: str, x: np.ndarray, y: np.ndarray, extra: Any) -> str:
    import hashlib

    return hashlib.sha256(f"{kind}{extra!r}".encode() + x.tobytes()
                          + "\n".join(y.tolist()).encode()).hexdigest()


class FitMemo:
    """Fitted heads and tuned settings by (features, labels): the three targets of one draw fit
    the same shares, so the bench fits and tunes each once (both are deterministic; the first
    call's time is the real cost)."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[Any, Any]] = {}

    def learner(self, embedder: CachedEmbedder) -> Any:
        from speculabel.backends.learner.backend import LearnerBackend

        memo = self

        class MemoLearner(LearnerBackend):
            def fit_model(self, x: np.ndarray, y: np.ndarray) -> Any:
                key = _digest("fit", x, y, self.pinned)
                if key not in memo.heads:
                    model = super().fit_model(x, y)
                    memo.heads[key] = (model, self.choice)
                model, self.choice = memo.heads[key]
                return model

            def _choose(self, x: np.ndarray, y: np.ndarray) -> Any:
                key = _digest("choose", x, y, None)
                if key not in memo.heads:
                    memo.heads[key] = (None, super()._choose(x, y))
                return memo.heads[key][1]

        return MemoLearner(embedder=embedder)


def _measure(pred: np.ndarray, accepted: np.ndarray, gold: np.ndarray, target: float) -> Row:
    right = pred == gold
    n_acc = int(accepted.sum())
    covered = float(right[accepted].mean()) if n_acc else None
    return {"coverage": float(accepted.mean()), "covered_agreement": covered,
            "whole_agreement": 1.0 - float((accepted & ~right).mean()),
            "violation": covered is not None and covered < target, "refused": n_acc == 0}


def run_speculabel(train: IntentSplit, idx: np.ndarray, test: IntentSplit, target: float,
                   delta: float, seed: int, embedder: CachedEmbedder, task: Any,
                   scope: str = "workers", memo: FitMemo | None = None,
                   policy: str | None = None) -> Row:
    """One certified learner at one target (the product's Python path)."""
    from speculabel import calibrate

    worker = (memo or FitMemo()).learner(embedder)
    t0, c0 = time.perf_counter(), time.process_time()
    cert = calibrate(task=task, workers=[worker], items=[train.texts[i] for i in idx],
                     references=[str(train.labels[i]) for i in idx], scope=scope,
                     target=target, delta=delta, seed=seed, policy=policy)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    ch = worker.choice
    row: Row = {"fit_s": fit_s, "cpu_s": cpu_s, "threshold": cert.threshold,
                "fit_items": cert.calibration.n_fit, "notes": cert.notes, "policy": cert.policy,
                "head": None if ch is None else (f"C={ch.C:g},class_weight={ch.class_weight},"
                                                 f"knn_weight={ch.knn_weight:g},"
                                                 f"temperature={ch.temperature:g}"),
                "fit_fraction": cert.calibration.fit_fraction}
    if cert.threshold is None:
        empty = np.zeros(len(test.labels), dtype=bool)
        return {**row, **_measure(test.labels, empty, test.labels, target)}
    proba = worker.predict_proba(test.texts)
    assert worker.labels is not None
    pred = np.array(worker.labels)[proba.argmax(axis=1)]
    top = np.sort(proba, axis=1)
    score = top[:, -1] - top[:, -2] if cert.policy == "confident-margin" else top[:, -1]
    accepted = score >= cert.threshold
    return {**row, **_measure(pred, accepted, test.labels, target)}


def run_tracer(train: IntentSplit, idx: np.ndarray, test: IntentSplit,
               targets: Sequence[float], delta: float) -> dict[float, Row]:
    """TRACER's frontier at every target from one fit."""
    import contextlib
    import io

    from tracer.fit.pipeline import fit_frontier, route_pipeline

    labels = sorted(set(train.labels[idx].tolist()))
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[v] for v in train.labels[idx]])
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):
        frontier, _ = fit_frontier(train.x[idx], y, list(targets), alpha=delta, skip=("gbt",))
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    out: dict[float, Row] = {}
    for target in targets:
        item = next(f for f in frontier if abs(f["target"] - target) < 1e-9)
        best = item["best"]
        row: Row = {"fit_s": fit_s, "cpu_s": cpu_s,
                    "method": best["summary"]["method"] if best else None}
        if not best or not best["stages"]:
            empty = np.zeros(len(test.labels), dtype=bool)
            out[target] = {**row, **_measure(test.labels, empty, test.labels, target)}
            continue
        preds, handled, _ = route_pipeline(best["stages"], test.x)
        pred = np.array([labels[int(p)] if 0 <= int(p) < len(labels) else "" for p in preds])
        out[target] = {**row, **_measure(pred, np.asarray(handled, dtype=bool), test.labels,
                                         target)}
    return out


def summarise(rows: list[Row]) -> Row:
    """Means over seeds (coverage counts a refusal as 0), violation and refusal rates; the
    median and largest fit time, and the mean load average the draws ran under."""
    cov = [r["covered_agreement"] for r in rows if r["covered_agreement"] is not None]
    cpu = [r["cpu_s"] for r in rows if r.get("cpu_s") is not None]
    load = [r["load"] for r in rows if r.get("load") is not None]
    return {
        "draws": len(rows),
        "coverage": float(np.mean([r["coverage"] for r in rows])),
        "covered_agreement": float(np.mean(cov)) if cov else None,
        "whole_agreement": float(np.mean([r["whole_agreement"] for r in rows])),
        "violation_rate": float(np.mean([r["violation"] for r in rows])),
        "refused": int(sum(r["refused"] for r in rows)),
        "fit_s": float(np.mean([r["fit_s"] for r in rows])),
        "fit_s_median": float(np.median([r["fit_s"] for r in rows])),
        "fit_s_max": float(np.max([r["fit_s"] for r in rows])),
        "cpu_s": float(np.mean(cpu)) if cpu else None,
        "load": float(np.mean(load)) if load else None,
    }


def head_to_head(
    datasets: dict[str, tuple[IntentSplit, IntentSplit, Any]],
    *,
    budgets: Sequence[int] = (500, 1500),
    targets: Sequence[float] = (0.90, 0.92, 0.95),
    seeds: int | Sequence[int] = 10,
    delta: float = 0.1,
    systems: Sequence[str] = ("speculabel", "tracer"),
    say: Callable[[str], None] = print,
    done: Sequence[Row] = (),
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every (data set, budget, seed) draw, every system and target; per-draw rows and means.
    ``done``: rows of an earlier, interrupted run (their draws are not run again); ``save`` is
    called with the result so far after every draw (nothing finished is lost)."""
    draws: list[Row] = list(done)
    finished = {(d["data"], d["budget"], d["seed"]) for d in draws}

    def result() -> dict[str, Any]:
        return {"delta": delta, "budgets": list(budgets), "targets": list(targets),
                "seeds": seeds if isinstance(seeds, int) else list(seeds),
                "summary": summary_of(draws), "draws": draws}

    for name, (train, test, task) in datasets.items():
        embedder = CachedEmbedder(train, test)
        for budget in budgets:
            for seed in (range(seeds) if isinstance(seeds, int) else seeds):
                if (name, budget, seed) in finished:
                    continue
                idx = np.random.default_rng(seed).choice(len(train.labels), budget, replace=False)
                if "tracer" in systems:
                    for target, row in run_tracer(train, idx, test, targets, delta).items():
                        draws.append({"data": name, "budget": budget, "seed": seed,
                                      "system": "tracer", "target": target, **row})
                memo = FitMemo()
                # the draw's first call fits every head: its cost (wall and CPU seconds)
                first: tuple[float, float] | None = None
                for system in [s for s in systems if s != "tracer"]:
                    policy = "confident-margin" if system.endswith("margin") else None
                    for target in targets:
                        row = run_speculabel(train, idx, test, target, delta, seed, embedder,
                                             task, memo=memo, policy=policy)
                        first = (row["fit_s"], row["cpu_s"]) if first is None else first
                        row["call_s"], (row["fit_s"], row["cpu_s"]) = row["fit_s"], first
                        draws.append({"data": name, "budget": budget, "seed": seed,
                                      "system": system, "target": target, **row})
                load = os.getloadavg()[0]  # the 1-minute load average as the draw ends
                for d in draws[-len(targets) * len(systems):]:
                    d["load"] = load
                say(f"{name} budget {budget} seed {seed}: "
                    + "; ".join(f"{d['system']} {d['target']:g} {100 * d['coverage']:.1f}%"
                                for d in draws[-len(targets) * len(systems):]))
                if save is not None:
                    save(result())
    return result()


def summary_of(draws: list[Row]) -> list[Row]:
    """One summary row per (data set, budget, system, target)."""
    groups: dict[tuple[str, int, str, float], list[Row]] = {}
    for d in draws:
        groups.setdefault((d["data"], d["budget"], d["system"], d["target"]), []).append(d)
    return [{"data": k[0], "budget": k[1], "system": k[2], "target": k[3], **summarise(v)}
            for k, v in groups.items()]


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files (e.g. one per data set or per seed range, run in parallel) as one;
    a draw present twice counts once."""
    seen: dict[tuple[Any, ...], Row] = {}
    for r in results:
        for d in r["draws"]:
            seen.setdefault((d["data"], d["budget"], d["seed"], d["system"], d["target"]), d)
    draws = list(seen.values())
    return {**results[0], "seeds": sorted({d["seed"] for d in draws}),
            "summary": summary_of(draws), "draws": draws}


def table(result: dict[str, Any]) -> str:
    """The summary as a Markdown table: one row per (data set, budget, target), both systems."""
    by = {(s["data"], s["budget"], s["target"], s["system"]): s for s in result["summary"]}
    keys = sorted({(d, b, t) for d, b, t, _ in by})
    systems = [s for s in ("speculabel", "speculabel-margin", "tracer")
               if any(k[3] == s for k in by)]
    head = " | ".join(f"{s} coverage | covered agr. | whole agr. | violations | refused | "
                      "fit s | CPU s" for s in systems)
    lines = [f"| data set | labels | target | {head} |",
             "|---|---|---|" + "---|" * (7 * len(systems))]

    def cells(s: Row | None) -> str:
        if s is None:
            return " | ".join(["-"] * 7)
        agr = "-" if s["covered_agreement"] is None else f"{s['covered_agreement']:.3f}"
        cpu = "-" if s.get("cpu_s") is None else f"{s['cpu_s']:.1f}"
        return (f"{100 * s['coverage']:.1f}% | {agr} | {s['whole_agreement']:.3f} | "
                f"{100 * s['violation_rate']:.0f}% | {s['refused']}/{s['draws']} | "
                f"{s['fit_s']:.1f} | {cpu}")

    for d, b, t in keys:
        row = " | ".join(cells(by.get((d, b, t, s))) for s in systems)
        lines.append(f"| {d} | {b} | {t:g} | {row} |")
    return "\n".join(lines)
