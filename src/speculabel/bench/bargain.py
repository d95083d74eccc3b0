"""Head-to-head with BARGAIN: who pays fewer oracle calls for a whole-data agreement target?

Same items, same proxy scores, same oracle labels for every method.  The proxy is
``learner:minilm`` (MiniLM embeddings + logistic regression) fitted on a disjoint *fit* share of
gold labels; its score is its top probability, its label the argmax.  Gold stands for the judge
(the oracle), so no LLM is needed.  For each target ``T`` and seed (the seed draws the labels
each method buys; the items are fixed) every method outputs one label per item; the bench
records the share of items the oracle labelled and the output's agreement with the oracle.

Methods: ours (:func:`speculabel.certify.sequential.sequential_certify`, the ``pilot`` rule, rank
cuts, transductive exact test) and its other stopping rules; BARGAIN's accuracy-target routine
(``BARGAIN.BARGAIN_A`` from the PyPI package ``bargain``); the best fixed sample size in
hindsight (the fixed size with the lowest mean cost over the seeds, exact test); the best rank
cut in hindsight (the loosest cut whose kept disagreements allow the target: what an oracle that
knew every label would pick, with no label bought).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.certify.finite import allowed_misses
from speculabel.certify.rank import rank_order
from speculabel.certify.sequential import sequential_certify

FIXED_SIZES = (10, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500, 700)
TIE_KEY = "speculabel-bench"


@dataclass
class Scored:
    """One input: ids, gold (the oracle), the proxy's label and score for every item."""

    name: str
    ids: list[str]
    gold: list[str]
    pred: list[str]
    score: list[float]

    def __len__(self) -> int:
        return len(self.ids)


def load_input(source: str, count: int) -> tuple[list[Any], list[str]]:
    """``tweets:SPLIT`` (TweetEval, seeded shuffle) or ``pairs:SPLIT:SEED`` (Banking77 pairs)."""
    from speculabel.io.datasets import banking77_pairs, tweeteval

    kind, _, rest = source.partition(":")
    if kind == "tweets":
        data = tweeteval(rest or "test")
        order = np.random.default_rng(0).permutation(len(data.items))[:count]
        return [data.items[i] for i in order], [str(data.gold[i]) for i in order]
    if kind == "pairs":
        split, _, seed = rest.partition(":")
        data = banking77_pairs(count, seed=int(seed or 0), split=split or "test")
        return list(data.items), [str(g) for g in data.gold]
    raise ValueError(f"unknown bench input {source!r}; use tweets:SPLIT or pairs:SPLIT:SEED")


def proxy_scores(source: str, n_items: int, n_fit: int, cache: Path | None = None) -> Scored:
    """The proxy's labels and scores on ``n_items`` items of ``source`` (after ``n_fit`` fit
    items, disjoint), computed once and cached as JSON under ``cache``."""
    key = f"{source.replace(':', '_')}-{n_items}-fit{n_fit}.json"
    if cache is not None and (cache / key).is_file():
        d = json.loads((cache / key).read_text())
        return Scored(**d)
    from speculabel.backends.learner.base import LearningWorker
    from speculabel.backends.registry import load_backend

    items, gold = load_input(source, n_fit + n_items)
    if len(items) < n_fit + n_items:
        raise ValueError(f"{source}: {len(items)} items, fewer than {n_fit} + {n_items}")
    worker = load_backend("learner:minilm")
    assert isinstance(worker, LearningWorker)
    try:
        names = tuple(items[0].fields)
        rows = [tuple(str(it.fields[f]) for f in names) for it in items]
        x = worker.features(rows)
    finally:
        worker.close()
    head = worker.new_head().fit(x[:n_fit], gold[:n_fit])
    proba = head.predict_proba(x[n_fit:])
    classes = [str(c) for c in head.classes_]
    out = Scored(source, [it.id for it in items[n_fit:]], gold[n_fit:],
                 [classes[int(j)] for j in proba.argmax(1)], [float(p) for p in proba.max(1)])
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / key).write_text(json.dumps(asdict(out)))
    return out


@dataclass
class Outcome:
    """One run: share of items the oracle labelled, agreement of the output with the oracle."""

    oracle_share: float
    agreement: float


def _outcome(s: Scored, kept: np.ndarray, bought: set[int]) -> Outcome:
    """Workers' label on kept, unlabelled items; the oracle's everywhere else."""
    gold, pred = np.array(s.gold), np.array(s.pred)
    workers = kept.copy()
    if bought:
        workers[list(bought)] = False
    out = np.where(workers, pred, gold)
    return Outcome(1.0 - float(workers.mean()), float((out == gold).mean()))


def _ordered(s: Scored) -> np.ndarray:
    return rank_order(s.score, s.ids, TIE_KEY)


def run_ours(s: Scored, target: float, delta: float, seed: int, rule: str = "reuse",
             **options: Any) -> Outcome:
    """Our sequential certification on the keyed rank order (gold as the labeller)."""
    order = _ordered(s)
    ids = [s.ids[i] for i in order]
    preds = [s.pred[i] for i in order]
    lookup = dict(zip(s.ids, s.gold, strict=True))
    res = sequential_certify(ids, preds, lambda xs: [lookup[x] for x in xs], target, delta,
                             rule=rule, seed=seed, **options)
    kept = np.zeros(len(s), dtype=bool)
    kept[order[:res.certificate.cut]] = True
    where = {x: i for i, x in enumerate(s.ids)}
    return _outcome(s, kept, {where[x] for x in res.labels})


def best_cut(s: Scored, target: float) -> Outcome:
    """The loosest rank cut whose kept disagreements allow the target (hindsight, no labels)."""
    order = _ordered(s)
    miss = np.array([s.pred[i] != s.gold[i] for i in order])
    b = allowed_misses(target, len(s))
    m = int(np.searchsorted(np.cumsum(miss), b + 1, side="left"))
    kept = np.zeros(len(s), dtype=bool)
    kept[order[:m]] = True
    return _outcome(s, kept, set())


def run_bargain(s: Scored, target: float, delta: float, seed: int) -> Outcome:
    """BARGAIN's accuracy-target routine (``BARGAIN_A``) with the proxy's labels and scores
    and gold as the oracle."""
    from BARGAIN import BARGAIN_A, Oracle, Proxy

    pred, score, gold = s.pred, s.score, s.gold

    class _P(Proxy):
        def proxy_func(self, input: str) -> tuple[str, float]:
            i = int(input)
            return pred[i], score[i]

    class _O(Oracle):
        def oracle_func(self, input: str, proxy_output: Any) -> tuple[bool, str]:
            i = int(input)
            return proxy_output == gold[i], gold[i]

    runner = BARGAIN_A(_P(verbose=False, max_workers=1), _O(verbose=False, max_workers=1),
                       target=target, delta=delta, seed=seed, verbose=False)
    out, used = runner.process([str(i) for i in range(len(s))], return_oracle_usage=True)
    out_arr, g = np.array(out), np.array(gold)
    return Outcome(float(np.mean(used)), float((out_arr == g).mean()))


def summary(runs: Sequence[Outcome], target: float) -> dict[str, float]:
    share = np.array([r.oracle_share for r in runs])
    agree = np.array([r.agreement for r in runs])
    return {"oracle_share": float(share.mean()), "agreement_mean": float(agree.mean()),
            "agreement_worst": float(agree.min()),
            "violation_rate": float((agree < target - 1e-12).mean()), "runs": len(runs)}


def head_to_head(
    s: Scored,
    targets: Sequence[float],
    delta: float,
    seeds: int,
    *,
    rules: Sequence[str] = ("reuse",),
    bargain: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every method at every target over ``seeds`` seeds; ``fixed`` is the best fixed size."""
    out: dict[str, Any] = {"input": s.name, "items": len(s), "delta": delta, "seeds": seeds,
                           "targets": {}}
    for t in targets:
        row: dict[str, Any] = {}
        for rule in rules:
            row[f"ours:{rule}"] = summary([run_ours(s, t, delta, k, rule) for k in range(seeds)],
                                          t)
        sizes = [n for n in FIXED_SIZES if n <= len(s) // 2]
        fixed = {n: summary([run_ours(s, t, delta, k, "fixed", size=n) for k in range(seeds)], t)
                 for n in sizes}
        best_n = min(fixed, key=lambda n: fixed[n]["oracle_share"])
        row["fixed-best"] = {**fixed[best_n], "size": best_n}
        row["fixed-all"] = {str(n): v["oracle_share"] for n, v in fixed.items()}
        row["cut-best"] = summary([best_cut(s, t)], t)
        if bargain:
            row["bargain"] = summary([run_bargain(s, t, delta, k) for k in range(seeds)], t)
        out["targets"][f"{t:g}"] = row
        if progress:
            progress(f"{s.name} N={len(s)} T={t:g} done")
    return out


def table(results: Sequence[dict[str, Any]]) -> str:
    """One line per input x target x method: oracle share, agreement mean / worst, violations."""
    lines = [f"{'input':<22}{'N':>6}{'T':>6}  {'method':<16}{'oracle %':>9}{'agree':>8}"
             f"{'worst':>8}{'viol':>7}"]
    for r in results:
        for t, row in r["targets"].items():
            for name, v in row.items():
                if name == "fixed-all":
                    continue
                label = f"{name}(n={v['size']})" if name == "fixed-best" else name
                lines.append(f"{r['input']:<22}{r['items']:>6}{t:>6}  {label:<16}"
                             f"{100 * v['oracle_share']:>9.1f}{v['agreement_mean']:>8.3f}"
                             f"{v['agreement_worst']:>8.3f}{v['violation_rate']:>7.2f}")
    return "\n".join(lines)


def compact_table(results: Sequence[dict[str, Any]]) -> str:
    """One Markdown row per input x target: oracle share of ours, BARGAIN and the hindsight
    baselines, then violation rate and worst run of ours and BARGAIN."""
    head = ("| input | N | T | ours % | BARGAIN % | best fixed n in hindsight % (n) | best cut in "
            "hindsight % | violations ours / BARGAIN | worst run ours / BARGAIN |")
    lines = [head, "|" + "---|" * 9]
    for r in results:
        for t, row in r["targets"].items():
            ours = next((v for k, v in row.items() if k.startswith("ours:")), None)
            bar, fix, cut = row.get("bargain"), row["fixed-best"], row["cut-best"]
            if ours is None:
                continue

            def pct(v: dict[str, Any] | None) -> str:
                return "-" if v is None else f"{100 * v['oracle_share']:.1f}"

            viol = f"{ours['violation_rate']:.2f} / " + (
                "-" if bar is None else f"{bar['violation_rate']:.2f}")
            worst = f"{ours['agreement_worst']:.3f} / " + (
                "-" if bar is None else f"{bar['agreement_worst']:.3f}")
            lines.append(f"| {r['input']} | {r['items']} | {t} | {pct(ours)} | {pct(bar)} | "
                         f"{pct(fix)} ({fix['size']}) | {pct(cut)} | {viol} | {worst} |")
    return "\n".join(lines)
