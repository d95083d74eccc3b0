"""Does the calibrated threshold keep its promise on data it was not calibrated on?

For each of ``--splits`` random splits of the labelled TweetEval test items: calibrate on one
part (``--cal-frac``), then measure on the rest the share of items the workers decide
(coverage; judge-call rate = 1 - coverage) and their agreement with the reference.  A split
*violates* the guarantee when that held-out agreement falls below the target.  The guarantee
says the violation rate is at most ``delta``.

Two rates are reported.  The *held-out* rate is the one asked for, but the held-out part is a
sample too: when the certified threshold's true agreement sits just above the target, sampling
noise alone drops the held-out agreement below it, so the held-out rate overstates violations
when the held-out part is not much larger than the calibration part (measured: 0.13-0.19 with a
50/50 split of 6,000 tweets, 0.00-0.03 with 1,000 to calibrate).  The *population* rate takes
all the items as the population (the calibration sample is drawn from it) and checks the
agreement of the whole set at the chosen threshold: that is exactly what the guarantee is
about.  ``--cal-frac`` is a share (<= 1) or a number of items (> 1).

Workers: any mix of stored LLM votes (``--store``, e.g. from ``speculabel bench --out DIR``),
``vader`` (computed here, 0.1 ms a tweet) and ``learner:minilm`` trained here on the TweetEval
*validation* split's gold labels (a real cheap worker, independent of the test items).
Reference: ``gold`` (TweetEval's labels) or ``judge`` (the judge's stored votes; only items
that have one are used).

Writes ``guarantee.json``, ``guarantee.md`` and ``judge_rate_vs_target.png`` to ``--out``.

    python scripts/guarantee_check.py --workers vader,learner:minilm --reference gold \
        --n 6000 --cal-frac 1000 --splits 100 --out bench-out/calibration --tag gold
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from speculabel import calibrate as cal
from speculabel.records import Item, Vote
from speculabel.task import SENTIMENT

CONFIGS = {
    "confident-majority": ("confident-majority", "none"),
    "weighted+calibrated": ("weighted", "auto"),
}


def learner_on_val(directory: Path, n_train: int | None = None) -> Any:
    """A MiniLM learner fitted on TweetEval validation gold labels (cached in ``directory``)."""
    from speculabel.backends.learner import LearnerBackend
    from speculabel.datasets import tweeteval

    val = tweeteval("val", n_train)
    lrn = LearnerBackend("learner:minilm", directory=directory, min_per_class=20)
    lrn.score(SENTIMENT, [])
    lrn.fit([it.fields["text"] for it in val.items], val.gold)
    return lrn


def worker_votes(
    specs: list[str], items: list[Item], store: Any, out_dir: Path, say: Any
) -> dict[str, list[Vote | None]]:
    """Votes per worker: vader and the learner computed here, LLMs read from the store."""
    from speculabel.backends.registry import load_backend

    got: dict[str, list[Vote | None]] = {}
    llms = [s for s in specs if s not in ("vader", "learner:minilm")]
    if llms:
        if store is None:
            raise SystemExit(f"LLM workers {llms} need --store with their votes")
        got.update(cal.stored_votes(SENTIMENT, items, llms, store))
    if "vader" in specs:
        with load_backend("vader") as vb:
            got["vader"] = list(vb.score(SENTIMENT, items))
    if "learner:minilm" in specs:
        t0 = time.time()
        lrn = learner_on_val(out_dir / "learner-val")
        votes: list[Vote | None] = []
        for i in range(0, len(items), 256):
            votes.extend(lrn.score(SENTIMENT, items[i : i + 256]))
        lrn.close()
        got["learner:minilm"] = votes
        say(f"learner:minilm trained on {lrn.trained_on} val labels, {time.time() - t0:.0f}s")
    return got


def check(
    data: cal.CalibrationData,
    targets: list[float],
    delta: float,
    splits: int,
    cal_frac: float,
    configs: dict[str, tuple[str, str]],
    seed: int,
    method: str = "fixed-sequence",
) -> dict[str, Any]:
    """Per config and target: violation rate, coverage and agreement over random splits."""
    rng = np.random.default_rng(seed)
    n = len(data)
    n_cal = round(cal_frac * n) if cal_frac <= 1 else int(cal_frac)
    rows: dict[str, dict[str, list[dict[str, float]]]] = {
        c: {f"{t:g}": [] for t in targets} for c in configs
    }
    for s in range(splits):
        perm = rng.permutation(n)
        cal_part, test_part = data.subset(sorted(perm[:n_cal])), data.subset(sorted(perm[n_cal:]))
        for cname, (policy, mcal) in configs.items():
            fits = policy == "weighted" or mcal != "none"
            if fits:  # fit on 30% of the calibration part, certify on the rest
                order = rng.permutation(len(cal_part))
                k = round(0.3 * len(cal_part))
                fit_part = cal_part.subset(sorted(order[:k]))
                cert_part = cal_part.subset(sorted(order[k:]))
            else:
                fit_part = cert_part = cal_part
            calibration, weights = cal.fit_rule(fit_part, policy, model_calibration=mcal, seed=s)
            c_scores, c_agree = cal.rule_scores(cert_part, policy, weights, calibration)
            t_scores, t_agree = cal.rule_scores(test_part, policy, weights, calibration)
            # the whole set as the population: its agreement is what the guarantee is about
            p_scores, p_agree = cal.rule_scores(data, policy, weights, calibration)
            for target in targets:
                res = cal.calibrate_threshold(c_scores, c_agree, target, delta, method=method)
                if res.feasible:
                    assert res.threshold is not None
                    acc = t_scores >= res.threshold
                    decided = int(acc.sum())
                    agreement = float(t_agree[acc].mean()) if decided else float("nan")
                    pop = p_scores >= res.threshold
                    pop_agreement = float(p_agree[pop].mean()) if pop.any() else float("nan")
                else:
                    decided, agreement, pop_agreement = 0, float("nan"), float("nan")
                rows[cname][f"{target:g}"].append({
                    "feasible": float(res.feasible),
                    "threshold": res.threshold if res.threshold is not None else float("nan"),
                    "cal_coverage": res.coverage,
                    "coverage": decided / len(test_part),
                    "agreement": agreement,
                    "violated": float(decided > 0 and agreement < target),
                    "violated_population": float(pop_agreement < target),
                })
    summary: dict[str, Any] = {}
    for cname, by_t in rows.items():
        summary[cname] = {}
        for t, rs in by_t.items():
            viol = [r["violated"] for r in rs]
            agr = [r["agreement"] for r in rs if not math.isnan(r["agreement"])]
            thr = [r["threshold"] for r in rs if not math.isnan(r["threshold"])]
            k = int(sum(viol))
            summary[cname][t] = {
                "splits": len(rs),
                "feasible": float(np.mean([r["feasible"] for r in rs])),
                "violation_rate": k / len(rs),
                "violation_rate_upper95": cal.binom_upper_bound(k, len(rs), 0.05),
                "population_violation_rate": float(
                    np.mean([r["violated_population"] for r in rs])),
                "violation_rate_when_feasible": (
                    k / max(1, sum(r["feasible"] for r in rs))
                ),
                "mean_threshold": float(np.mean(thr)) if thr else None,
                "mean_coverage": float(np.mean([r["coverage"] for r in rs])),
                "judge_call_rate": 1.0 - float(np.mean([r["coverage"] for r in rs])),
                "mean_agreement": float(np.mean(agr)) if agr else None,
                "min_agreement": float(np.min(agr)) if agr else None,
            }
    return summary


def full_calibration(data: cal.CalibrationData, targets: list[float], delta: float,
                     configs: dict[str, tuple[str, str]], method: str) -> dict[str, Any]:
    """The configuration ``speculabel calibrate`` would write, calibrated on all the items."""
    out: dict[str, Any] = {}
    for cname, (policy, mcal) in configs.items():
        out[cname] = {}
        for t in targets:
            plan = cal.plan_cascade(data, t, delta, policy=policy, model_calibration=mcal,
                                    method=method)
            r = plan.result
            out[cname][f"{t:g}"] = {
                "feasible": r.feasible, "threshold": r.threshold, "coverage": r.coverage,
                "judge_call_rate": r.judge_call_rate, "agreement": r.agreement,
                "bound": r.bound, "best_bound": r.best_bound, "shortfall": r.shortfall,
                "weights": plan.weights, "calibration": plan.calibration_table(),
                "message": r.message(),
            }
    return out


def markdown(meta: dict[str, Any], summary: dict[str, Any], full: dict[str, Any]) -> str:
    lines = [
        f"### Guarantee check: {meta['splits']} random calibration/test splits",
        "",
        f"Workers {', '.join(meta['workers'])}; reference: {meta['reference']}; "
        f"{meta['n_items']} TweetEval test items, {meta['n_cal']} to calibrate, "
        f"the rest to measure; delta = {meta['delta']}; exact binomial test, {meta['method']}.",
        "",
        "| rule | target | feasible | judge-call rate | held-out agreement (mean / min) | "
        "held-out violation rate (95% upper) | population violation rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for cname, by_t in summary.items():
        for t, s in by_t.items():
            agr = (f"{s['mean_agreement']:.3f} / {s['min_agreement']:.3f}"
                   if s["mean_agreement"] is not None else "-")
            ok = "ok" if s["violation_rate"] <= meta["delta"] else "ABOVE delta"
            lines.append(
                f"| {cname} | {t} | {100 * s['feasible']:.0f}% | {100 * s['judge_call_rate']:.1f}% "
                f"| {agr} | {s['violation_rate']:.3f} ({s['violation_rate_upper95']:.3f}) {ok} "
                f"| {s['population_violation_rate']:.3f} |"
            )
    lines += ["", "#### Calibrated on all the items (what `speculabel calibrate` writes)", "",
              "| rule | target | threshold | coverage | agreement | lower bound |",
              "|---|---|---|---|---|---|"]
    for cname, by_t in full.items():
        for t, r in by_t.items():
            if r["feasible"]:
                lines.append(f"| {cname} | {t} | {r['threshold']:g} | {100 * r['coverage']:.1f}% "
                             f"| {r['agreement']:.3f} | {r['bound']:.3f} |")
            else:
                lines.append(f"| {cname} | {t} | none | 0% | - | best {r['best_bound']:.3f}, "
                             f"short by {r['shortfall']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], delta: float, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for cname, by_t in summary.items():
        ts = [float(t) for t in by_t]
        a1.plot(ts, [by_t[t]["judge_call_rate"] for t in by_t], marker="o", label=cname)
        a2.plot(ts, [by_t[t]["violation_rate"] for t in by_t], marker="o", label=cname)
    a1.set_xlabel("agreement target")
    a1.set_ylabel("judge-call rate (held-out)")
    a1.set_ylim(0, 1.02)
    a1.grid(alpha=0.3)
    a1.legend()
    a2.axhline(delta, color="red", linestyle="--", label=f"delta = {delta}")
    a2.set_xlabel("agreement target")
    a2.set_ylabel("share of splits below target")
    a2.set_ylim(0, max(0.3, 2 * delta))
    a2.grid(alpha=0.3)
    a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="vader,learner:minilm")
    ap.add_argument("--reference", choices=("gold", "judge"), default="gold")
    ap.add_argument("--judge", default="qwen2.5-1.5b")
    ap.add_argument("--store", type=Path, default=None, help="votes.sqlite with LLM votes")
    ap.add_argument("--n", type=int, default=6000, help="first N TweetEval test items")
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--cal-frac", type=float, default=0.25,
                    help="calibration share (<= 1) or number of items (> 1)")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--targets", default="0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="fixed-sequence", choices=cal.METHODS)
    ap.add_argument("--out", type=Path, default=Path("bench-out/calibration"))
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    args = ap.parse_args(argv)

    from speculabel.datasets import DataMissing, tweeteval

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        data_set = tweeteval("test", args.n)
    except DataMissing as e:
        say(f"skipped: {e}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    store = None
    if args.store is not None:
        from speculabel.votestore import VoteStore

        store = VoteStore(args.store)
    workers = [w.strip() for w in args.workers.split(",") if w.strip()]
    items = list(data_set.items)
    got = worker_votes(workers, items, store, args.out, say)
    if args.reference == "judge":
        if store is None:
            raise SystemExit("--reference judge needs --store with the judge's votes")
        jv = cal.stored_votes(SENTIMENT, items, [args.judge], store)[args.judge]
        reference: list[str | None] = [v.label if v is not None else None for v in jv]
    else:
        reference = list(data_set.gold)
    keep = [i for i in range(len(items))
            if reference[i] is not None and all(got[w][i] is not None for w in workers)]
    say(f"{len(keep)} of {len(items)} items have every worker's vote and a reference")
    rows: list[list[Vote]] = []
    for i in keep:
        row: list[Vote] = []
        for w in workers:
            v = got[w][i]
            assert v is not None
            row.append(v)
        rows.append(row)
    data = cal.CalibrationData(SENTIMENT.label_names, workers, rows,
                               [reference[i] for i in keep], [items[i].id for i in keep])
    targets = [float(t) for t in args.targets.split(",")]
    configs = {c: CONFIGS[c] for c in args.configs.split(",")}
    t0 = time.time()
    summary = check(data, targets, args.delta, args.splits, args.cal_frac, configs, args.seed,
                    args.method)
    full = full_calibration(data, [t for t in targets if t in (0.9, 0.95)] or targets[-2:],
                            args.delta, configs, args.method)
    ref_name = "gold labels" if args.reference == "gold" else f"judge {args.judge}"
    meta = {"workers": workers, "reference": ref_name, "n_items": len(data),
            "splits": args.splits, "cal_frac": args.cal_frac, "delta": args.delta,
            "n_cal": round(args.cal_frac * len(data)) if args.cal_frac <= 1 else int(args.cal_frac),
            "method": args.method,
            "targets": targets, "seconds": round(time.time() - t0, 1),
            "accuracy_vs_reference": {
                w: float(np.mean([r[j].label == ref for r, ref in zip(rows, data.reference,
                                                                       strict=True)]))
                for j, w in enumerate(workers)}}
    tag = f"-{args.tag}" if args.tag else ""
    (args.out / f"guarantee{tag}.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "full": full}, indent=2, default=str)
    )
    md = markdown(meta, summary, full)
    (args.out / f"guarantee{tag}.md").write_text(md)
    plotted = plot(summary, args.delta, args.out / f"judge_rate_vs_target{tag}.png",
                   f"{' + '.join(workers)} vs {ref_name}")
    print(md)
    say(f"wrote {args.out}/guarantee{tag}.json, .md" + (" and the plot" if plotted else ""))
    worst = max(s["violation_rate"] for by_t in summary.values() for s in by_t.values())
    return 0 if worst <= args.delta + 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
