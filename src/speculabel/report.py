"""The bench report: report.json (every number), report.md (tables), PNG plots, report.html.

Everything here reads the analysis dict built by :func:`speculabel.bench.analyse` (plus the
measured runs); no model is ever called, so a report can be redone from the vote store alone.
The HTML file embeds its plots as base64 and links nothing, so it opens offline.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLOTS = {
    "agreement": "agreement_matrix.png",
    "pareto": "judge_rate_vs_agreement.png",
    "latency": "latency.png",
}


# ---------------------------------------------------------------- formatting


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def f3(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else f"{v:.3f}"


def pct(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else f"{100 * v:.1f} %"


def ms(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "-"
    return f"{1000 * v:.2f}" if v < 0.01 else f"{1000 * v:.0f}"


def times(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else f"{v:.2f}x"


def signed_pct(x: Any) -> str:
    v = _num(x)
    return "-" if v is None else f"{100 * v:+.1f} %"


def mode(cfg: dict[str, Any]) -> str:
    m = "parallel" if cfg.get("parallel") else "sequential"
    return m + (" + early exit" if cfg.get("early_exit") else "")


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def md(self) -> str:
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        if not self.rows:
            return "\n".join([*out, "(none)", ""])
        out.append("| " + " | ".join(self.headers) + " |")
        out.append("|" + "|".join("---" for _ in self.headers) + "|")
        for r in self.rows:
            out.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
        out.append("")
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape
        parts = [f"<h3>{esc(self.title)}</h3>"]
        if self.note:
            parts.append(f"<p>{esc(self.note)}</p>")
        if not self.rows:
            parts.append("<p>(none)</p>")
            return "\n".join(parts)
        parts.append("<table><thead><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in self.headers]
        parts.append("</tr></thead><tbody>")
        for r in self.rows:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
        parts.append("</tbody></table>")
        return "\n".join(parts)


# ---------------------------------------------------------------- tables


def _config_row(c: dict[str, Any], gold: bool) -> list[str]:
    row = [
        " + ".join(c["workers"]), c["rule"], mode(c), pct(c["coverage"]),
        pct(c["agreement_decided"]), pct(c["e2e_agreement"]),
    ]
    if gold:
        row.append(pct(c.get("e2e_accuracy")))
    row += [pct(c["judge_call_rate"]), ms(c["latency_p50_s"]), ms(c["latency_p95_s"]),
            ms(c["cpu_mean_s"]), times(c["speedup"]), times(c["cpu_speedup"])]
    return row


def _config_headers(gold: bool) -> list[str]:
    h = ["workers", "rule", "mode", "coverage", "agree on decided", "e2e agree w/ judge"]
    if gold:
        h.append("e2e acc (gold)")
    return [*h, "judge calls", "p50 ms", "p95 ms", "CPU ms/item", "speedup", "CPU speedup"]


def tables(a: dict[str, Any]) -> list[Table]:
    """Every table of the report, in order."""
    gold = bool(a.get("has_gold"))
    judge = a["judge"]
    out: list[Table] = []

    models = a["models"]
    h = ["model", "role"]
    if gold:
        h += ["accuracy", "macro recall"]
    h += ["agree w/ judge", "p50 ms", "p95 ms", "mean ms", "CPU ms/item", "abstained"]
    rows = []
    for name, m in models.items():
        r = [name, "judge" if name == judge else "worker"]
        if gold:
            r += [pct(m.get("accuracy")), pct(m.get("macro_recall"))]
        r += [pct(m.get("agreement_with_judge")), ms(m["latency_p50_s"]), ms(m["latency_p95_s"]),
              ms(m["latency_mean_s"]), ms(m["cpu_mean_s"]), str(m["abstained"])]
        rows.append(r)
    out.append(Table("Models (paper Fig. 1, Figs. 3-4)", h, rows,
                     "Latency and CPU time per item as stored by the bench run of each model."))

    names = list(a["agreement_matrix"])
    out.append(Table(
        "Agreement matrix (share of items with the same label)", ["", *names],
        [[r, *(pct(a["agreement_matrix"][r][c]) for c in names)] for r in names],
    ))

    out.append(Table(
        "Selected configurations (computed from stored votes)", _config_headers(gold),
        [_config_row(c, gold) for c in a["selected"]], a.get("selection", ""),
    ))

    meas = a.get("measured") or {}
    if meas.get("runs"):
        rows = []
        for r in meas["runs"]:
            m, c = r["measured"], r["computed"]
            rows.append([
                " + ".join(r["workers"]), r["rule"] + (" + early exit" if r["early_exit"] else ""),
                str(r["items"]), times(m["speedup"]), times(c["speedup"]),
                signed_pct(r["gap"]["speedup_rel"]), times(m["cpu_speedup"]),
                times(c["cpu_speedup"]), signed_pct(r["gap"]["cpu_speedup_rel"]),
                pct(m["coverage"]), pct(c["coverage"]), pct(r["same_final_label_as_computed"]),
            ])
        ja = meas.get("judge_alone", {})
        out.append(Table(
            "Measured against computed (real cascade and judge alone, same items, one process)",
            ["workers", "rule", "items", "measured speedup", "computed", "gap",
             "measured CPU ratio", "computed", "gap", "measured coverage", "computed coverage",
             "same labels as computed"],
            rows,
            f"Judge alone ({meas.get('judge')}): {f3(ja.get('wall_s'))} s wall, "
            f"{f3(ja.get('cpu_s'))} s CPU; its labels agree with its stored votes on "
            f"{pct(ja.get('agreement_with_stored_votes'))} of the items. Gap = measured / "
            "computed - 1. Sequential workers, batches as in the bench, no vote store.",
        ))
    else:
        out.append(Table("Measured against computed", ["note"],
                         [[str(meas.get("skipped", "not run"))]]))

    out += _calibration_tables(a, gold)
    out += _learner_tables(a)

    cfgs = a["configs"]
    seq = [c for c in cfgs if not c["parallel"]]
    front = set(a.get("pareto_front", []))
    points: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for c in seq:
        if c["key"] in front:
            points.setdefault((c["judge_call_rate"], c["e2e_agreement"]), []).append(c)
    rows = []
    for (_, _), cs in sorted(points.items(), key=lambda kv: kv[0][0]):
        cs.sort(key=lambda c: -(c["speedup"] or 0))
        row = _config_row(cs[0], gold)
        if len(cs) > 1:
            row[1] += f" (+{len(cs) - 1} with the same point)"
        rows.append(row)
    out.append(Table(
        "Pareto front: fewest judge calls for each level of agreement (sequential workers)",
        _config_headers(gold), rows,
        "One row per point (the fastest configuration reaching it); report.json lists them all.",
    ))

    best: dict[tuple[str, str], dict[str, Any]] = {}
    for c in seq:
        k = (" + ".join(c["workers"]), c["rule"])
        if k not in best or (c["speedup"] or 0) > (best[k]["speedup"] or 0):
            best[k] = c
    out.append(Table(
        "Every worker pair and triple under every rule (paper Fig. 2; sequential workers, "
        "the faster of early exit on/off)",
        _config_headers(gold),
        [_config_row(c, gold) for c in sorted(best.values(), key=lambda c: -(c["speedup"] or 0))],
    ))

    par = {(" + ".join(c["workers"]), c["rule"], c["early_exit"]): c
           for c in cfgs if c["parallel"]}
    rows = []
    for c in a["selected"]:
        for early in (False, True):
            p = par.get((" + ".join(c["workers"]), c["rule"], early))
            if p is not None:
                rows.append(_config_row(p, gold))
    out.append(Table(
        "The selected worker sets with parallel workers (ideal: one core set per worker)",
        _config_headers(gold), rows,
        "Parallel cost = slowest worker + judge; on a 2-core machine workers contend for the "
        "same cores, so real parallel runs are slower than this.",
    ))

    by = a.get("by_judge") or {}
    rows = []
    for j, d in by.items():
        for c in d.get("selected", []):
            rows.append([j, *_config_row(c, gold)])
    if rows:
        out.append(Table("Best configurations with each model as the judge",
                         ["judge", *_config_headers(gold)], rows))
    return out


def _measured_speedup(a: dict[str, Any], workers: list[str], rule: str) -> str:
    for r in (a.get("measured") or {}).get("runs", []):
        if list(r["workers"]) == list(workers) and r["rule"] == rule and not r["early_exit"]:
            return times(r["measured"]["speedup"])
    return "-"


def _calibration_tables(a: dict[str, Any], gold: bool) -> list[Table]:
    cal = a.get("calibration")
    if not cal:
        return []
    d = cal["delta"]
    h = ["method", "target", "workers", "threshold", "coverage", "agree on decided",
         "e2e agree w/ judge"]
    if gold:
        h.append("e2e acc (gold)")
    h += ["judge calls", "speedup computed", "measured", "violation rate"]
    rows = []
    for method in cal["methods"]:
        for t in cal["targets"]:
            r = (cal.get("best") or {}).get(method, {}).get(f"{t:g}")
            if r is None:
                rows.append([method, f"{t:g}", "no worker set meets it", *["-"] * (len(h) - 3)])
                continue
            c, sc = r["config"], r["split_check"]
            row = [method, f"{t:g}", " + ".join(r["workers"]), f"{r['threshold']:g}",
                   pct(r["coverage"]), pct(r["agreement_decided"]), pct(c["e2e_agreement"])]
            if gold:
                row.append(pct(c.get("e2e_accuracy")))
            row += [pct(c["judge_call_rate"]), times(c["speedup"]),
                    _measured_speedup(a, r["workers"], c["rule"]),
                    pct(sc["population_violation_rate"])]
            rows.append(row)
    held = "held" if cal.get("guarantee_held") else "did NOT hold"
    tables = [Table(
        f"Criterion 2 with a guarantee: calibrated confident-majority (delta {d:g})", h, rows,
        f"For each test method and agreement target, the fastest worker set whose threshold the "
        f"exact binomial test certifies on all {cal['n']} bench items (reference: the judge "
        f"{cal['reference']}): agreement on worker-decided items >= target with probability "
        f">= {1 - d:g}. Violation rate: over {cal['splits']} random splits (calibrate on "
        f"{100 * cal['cal_frac']:g} % of the items), the share of splits whose threshold gives "
        f"agreement below the target on all the items (the population the calibration part "
        f"was drawn from); the largest over every method, worker set and target is "
        f"{pct(cal['max_population_violation_rate'])} (must be <= {100 * d:g} %: {held}). "
        f"Measured only on the held-out half, which adds that half's own sampling noise, the "
        f"largest is {pct(cal['max_violation_rate'])}.",
    )]
    rows = []
    for r in cal["rows"]:
        sc = r["split_check"]
        rows.append([
            r["method"], " + ".join(r["workers"]), f"{r['target']:g}",
            f"{r['threshold']:g}" if r["feasible"] else "infeasible",
            pct(r["judge_call_rate"]),
            times(r["config"]["speedup"]) if r["config"] else "-",
            pct(sc["feasible_share"]), pct(sc["mean_test_coverage"]),
            pct(sc["mean_test_agreement"]), pct(sc["population_violation_rate"]),
            pct(sc["violation_rate"]),
        ])
    tables.append(Table(
        "Calibrated thresholds for every method, worker set and target",
        ["method", "workers", "target", "threshold", "judge calls", "speedup",
         "splits feasible", "held-out coverage", "held-out agreement", "violation rate",
         "held-out violation rate"], rows,
    ))
    return tables


def _learner_tables(a: dict[str, Any]) -> list[Table]:
    tables = []
    for ls in a.get("learner_streams") or []:
        meta, total = ls["meta"], ls["total"]
        rows = [[w["items"], str(w["labels_at_start"]), pct(w["learner_voting"]),
                 pct(w["judge_call_rate"]), str(w["decided_by_workers"]),
                 pct(w["agreement_with_judge"]), pct(w.get("accuracy_vs_gold"))]
                for w in ls["windows"]]
        tables.append(Table(
            f"Learning worker: judge-call rate as labels accumulate ({meta['n']} items, "
            f"reference {meta['reference']})",
            ["items", "labels at start", "learner voting", "judge-call rate",
             "decided by workers", "agreement with reference", "accuracy vs gold"], rows,
            f"Workers {', '.join(meta['workers'])}; confident majority re-certified after every "
            f"retrain (target {meta['target']}, delta {meta['delta']}). Overall judge-call rate "
            f"{pct(total['judge_call_rate'])}, agreement on worker-decided items "
            f"{pct(total['agreement_with_reference'])}. From {ls.get('file', '?')}.",
        ))
    return tables


# ---------------------------------------------------------------- plots


@contextlib.contextmanager
def _figure(path: Path, figsize: tuple[float, float], dpi: int = 110) -> Iterator[tuple[Any, Any]]:
    """A matplotlib figure and axes (headless backend), saved to ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield fig, ax
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def _plot_agreement(a: dict[str, Any], path: Path) -> None:
    names = list(a["agreement_matrix"])
    vals = [[_num(a["agreement_matrix"][r][c]) or 0.0 for c in names] for r in names]
    with _figure(path, (1.3 * len(names) + 2.5, 1.1 * len(names) + 1.8)) as (fig, ax):
        im = ax.imshow(vals, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                v = vals[i][j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center",
                        color="black" if v > 0.6 else "white", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="agreement")
        ax.set_title(f"Agreement between models ({a['n']} items)")


def _plot_pareto(a: dict[str, Any], path: Path) -> None:
    seq = [c for c in a["configs"] if not c["parallel"]]
    front = set(a.get("pareto_front", []))
    with _figure(path, (8, 5.5)) as (_fig, ax):
        for size, marker, color in ((2, "o", "tab:blue"), (3, "^", "tab:orange")):
            pts = [c for c in seq if len(c["workers"]) == size]
            ax.scatter([c["judge_call_rate"] for c in pts], [c["e2e_agreement"] for c in pts],
                       s=18, marker=marker, color=color, alpha=0.45,
                       label=f"{'pairs' if size == 2 else 'triples'} ({len(pts)})")
        fr = sorted((c for c in seq if c["key"] in front), key=lambda c: c["judge_call_rate"])
        if fr:
            ax.plot([c["judge_call_rate"] for c in fr], [c["e2e_agreement"] for c in fr], "-",
                    color="crimson", lw=1.5, label="Pareto front")
            ax.scatter([c["judge_call_rate"] for c in fr], [c["e2e_agreement"] for c in fr],
                       s=40, facecolors="none", edgecolors="crimson")
        marks: dict[tuple[float, float], list[str]] = {}
        for k, c in enumerate(a["selected"], 1):
            marks.setdefault((c["judge_call_rate"], c["e2e_agreement"]), []).append(f"#{k}")
        for (x, y), names in marks.items():
            ax.scatter([x], [y], s=90, marker="*", color="black", zorder=5)
            ax.annotate(",".join(names), (x, y), fontsize=9, xytext=(6, -13),
                        textcoords="offset points", color="black", zorder=6)
        ax.axhline(a.get("target_agreement", 0.8), color="gray", ls=":", lw=1)
        ax.set_xlabel("judge-call rate (share of items sent to the judge)")
        ax.set_ylabel("end-to-end agreement with the judge")
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(f"Every configuration (judge {a['judge']}; stars: selected)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)


def _plot_latency(a: dict[str, Any], path: Path) -> None:
    labels: list[str] = []
    p50: list[float] = []
    p95: list[float] = []
    for name, m in a["models"].items():
        labels.append(name + (" (judge)" if name == a["judge"] else ""))
        p50.append(1000 * (_num(m["latency_p50_s"]) or 0.0))
        p95.append(1000 * (_num(m["latency_p95_s"]) or 0.0))
    for k, c in enumerate(a["selected"], 1):
        labels.append(f"#{k} " + "+".join(c["workers"]) + f"\n{c['rule']}, {mode(c)}")
        p50.append(1000 * (_num(c["latency_p50_s"]) or 0.0))
        p95.append(1000 * (_num(c["latency_p95_s"]) or 0.0))
    with _figure(path, (max(7.0, 1.1 * len(labels) + 2), 5)) as (_fig, ax):
        xs = list(range(len(labels)))
        ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], p95, 0.4, label="p95")
        ax.set_xticks(xs, labels, rotation=30, ha="right", fontsize=7)
        positive = [v for v in p50 + p95 if v > 0]
        if positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")  # a lexicon (0.1 ms) beside LLMs (seconds)
        ax.set_ylabel("latency per item (ms)")
        ax.set_title("Latency per item: each model, and the selected cascades")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)


def _plot_calibration(a: dict[str, Any], path: Path) -> None:
    cal = a["calibration"]
    with _figure(path, (8, 5)) as (_fig, ax):
        sets: dict[str, list[dict[str, Any]]] = {}
        for r in cal["rows"]:
            sets.setdefault(" + ".join(r["workers"]), []).append(r)
        for name, rs in sets.items():
            rs.sort(key=lambda r: r["target"])
            ax.plot([r["target"] for r in rs], [r["judge_call_rate"] for r in rs], marker="o",
                    label=name)
        ax.set_xlabel(f"agreement target on worker-decided items (delta {cal['delta']:g})")
        ax.set_ylabel("judge-call rate at the certified threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Criterion 2: judge calls needed for each target ({cal['n']} items; "
                     f"1.0 = no threshold qualifies)")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)


def _plot_learner(a: dict[str, Any], path: Path) -> None:
    with _figure(path, (8, 4.8)) as (_fig, ax):
        for k, ls in enumerate(a["learner_streams"]):
            wins, meta = ls["windows"], ls["meta"]
            x = [w["end"] for w in wins]
            ref = meta["reference"]
            line = ax.plot(x, [w["judge_call_rate"] for w in wins], marker="o",
                           label=f"judge-call rate (reference {ref})")[0]
            ax.plot(x, [math.nan if w["agreement_with_judge"] is None
                        else w["agreement_with_judge"] for w in wins], marker="s", ls="--",
                    color=line.get_color(), alpha=0.7, label=f"agreement, decided ({ref})")
            if k == 0:
                ax.axhline(meta["target"], color="gray", ls=":", label=f"target {meta['target']}")
        ax.set_xlabel("items streamed (labels accumulate)")
        ax.set_ylim(0, 1.02)
        ax.set_title("The learning worker (" + " + ".join(a["learner_streams"][0]["meta"]["workers"])
                     + ")")
        ax.legend(loc="lower left", fontsize=7)
        ax.grid(alpha=0.3)


def write_plots(a: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out = {k: out_dir / v for k, v in PLOTS.items()}
    _plot_agreement(a, out["agreement"])
    _plot_pareto(a, out["pareto"])
    _plot_latency(a, out["latency"])
    if a.get("calibration"):
        out["calibration"] = out_dir / "judge_rate_vs_target.png"
        _plot_calibration(a, out["calibration"])
    if a.get("learner_streams"):
        out["learner"] = out_dir / "learner_stream.png"
        _plot_learner(a, out["learner"])
    return out


# ---------------------------------------------------------------- documents


def _headline(a: dict[str, Any]) -> list[str]:
    b = a.get("bench") or {}
    ds = b.get("dataset") or {}
    lines = [
        f"- task: {b.get('task', '?')} ({a['n']} items"
        + (f", data: {ds.get('name')}" if ds.get("name") else "") + ")",
        f"- judge: {a['judge']}; workers: every pair and triple of the other models",
        f"- rules: majority, unanimous, confident-majority at {a['thresholds']}",
        f"- vote store: {b.get('store', '?')}",
    ]
    env = b.get("environment") or {}
    if env:
        la = env.get("load_average_1_5_15min")
        busy = ""
        if la and env.get("cpus") and la[1] > 1.5 * env["cpus"]:
            busy = " (the machine was busy with other work: timings are inflated)"
        lines.append(f"- machine: {env.get('cpus')} CPUs, load average {la} at the end of the "
                     f"bench{busy}; llama-cpp-python {env.get('llama_cpp_python')}")
    ja = a.get("judge_alone") or {}
    if a.get("has_gold"):
        lines.append(f"- judge alone: accuracy {pct(ja.get('accuracy'))}, macro recall "
                     f"{pct(ja.get('macro_recall'))}, {ms(ja.get('latency_mean_s'))} ms per item")
    if a["selected"]:
        c = a["selected"][0]
        lines.append(
            f"- best configuration: {' + '.join(c['workers'])}, {c['rule']}, {mode(c)}: "
            f"speedup {times(c['speedup'])} (computed), coverage {pct(c['coverage'])}, "
            f"end-to-end agreement with the judge {pct(c['e2e_agreement'])}"
        )
    lines.append(f"- selection: {a.get('selection', '')}")
    meas = a.get("measured") or {}
    for r in meas.get("runs", []):
        lines.append(
            f"- measured {' + '.join(r['workers'])} / {r['rule']}: "
            f"{times(r['measured']['speedup'])} measured vs {times(r['computed']['speedup'])} "
            f"computed (gap {signed_pct(r['gap']['speedup_rel'])}) on {r['items']} items"
        )
    cal = a.get("calibration")
    if cal:
        for t in cal["targets"]:
            parts = []
            for method in cal["methods"]:
                r = (cal.get("best") or {}).get(method, {}).get(f"{t:g}")
                if r is None:
                    parts.append(f"{method}: none certified")
                    continue
                parts.append(
                    f"{method}: {' + '.join(r['workers'])} at {r['threshold']:g}, judge calls "
                    f"{pct(r['judge_call_rate'])}, speedup {times(r['config']['speedup'])} "
                    f"computed / {_measured_speedup(a, r['workers'], r['config']['rule'])} "
                    f"measured, violation rate "
                    f"{pct(r['split_check']['population_violation_rate'])}"
                )
            lines.append(f"- Criterion 2, target {t:g} (delta {cal['delta']:g}): "
                         + "; ".join(parts))
    for ls in a.get("learner_streams") or []:
        w = ls["windows"]
        lines.append(
            f"- learning worker over {ls['meta']['n']} items, reference "
            f"{ls['meta']['reference']}: judge-call rate {pct(w[0]['judge_call_rate'])} in the "
            f"first {w[0]['items']}, {pct(w[-1]['judge_call_rate'])} in the last "
            f"({w[-1]['items']})"
        )
    return lines


def render_md(a: dict[str, Any], plot_files: dict[str, Path] | None = None) -> str:
    parts = ["# speculabel bench report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.", "", *_headline(a), ""]
    if plot_files:
        for key, p in plot_files.items():
            parts += [f"![{key}]({p.name})", ""]
    parts += [t.md() for t in tables(a)]
    parts += [
        "### Definitions", "",
        "- coverage: share of items the workers decided; judge calls = 1 - coverage.",
        "- agree on decided: workers' label = judge's label, on the items the workers decided.",
        "- e2e agree: the cascade's final label = the judge's label, over all items.",
        "- speedup: total time of the judge labelling every item / total time of the cascade "
        "(computed from each model's stored per-item latency; sequential = sum of the workers "
        "asked, parallel = slowest of them; plus the judge when called).",
        "- CPU speedup: the same with CPU time (process time per item), which does not depend on "
        "how many cores run in parallel.",
        "- Pareto front: configurations that no other beats on both judge-call rate and "
        "end-to-end agreement. It ignores what the workers cost, so the fastest configurations "
        "(selected by speedup) need not lie on it.",
        "- measured: the real cascade (sequential workers, no vote store) and the judge alone on "
        "the same first items, one after the other in one process, after one untimed warm-up "
        "item per model; the computed numbers are for the same items. Other work on the machine "
        "changes timings between the two runs, so compare gaps against the load average above.",
        "",
    ]
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
"""


def render_html(a: dict[str, Any], plot_files: dict[str, Path] | None = None) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>speculabel bench report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>speculabel bench report</h1>",
        "<ul>" + "".join(f"<li>{esc(line[2:])}</li>" for line in _headline(a)) + "</ul>",
    ]
    for key, p in (plot_files or {}).items():
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        parts.append(f"<img alt='{esc(key)}' src='data:image/png;base64,{data}'>")
    parts += [t.html() for t in tables(a)]
    defs = render_md(a).split("### Definitions", 1)[1].strip().splitlines()
    parts.append("<h3>Definitions</h3><ul>" + "".join(
        f"<li>{esc(d[2:])}</li>" for d in defs if d.startswith("- ")) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(a: dict[str, Any], out_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md, the PNG plots and report.html; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["json"] = out_dir / "report.json"
    files["json"].write_text(json.dumps(a, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    plot_files = write_plots(a, out_dir) if plots else {}
    files.update({f"png_{k}": v for k, v in plot_files.items()})
    files["md"] = out_dir / "report.md"
    files["md"].write_text(render_md(a, plot_files), encoding="utf-8")
    files["html"] = out_dir / "report.html"
    files["html"].write_text(render_html(a, plot_files), encoding="utf-8")
    return files


def headline_tables(a: dict[str, Any]) -> Sequence[Table]:
    """The tables the CLI prints at the end of a bench."""
    ts = tables(a)
    return [t for t in ts if t.title.startswith(("Models", "Agreement matrix", "Selected",
                                                 "Measured", "Criterion 2", "Learning worker"))]
