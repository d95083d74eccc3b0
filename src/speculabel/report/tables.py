"""The report's tables, built from the analysis dict alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from speculabel.report.format import (
    Table,
    config_headers,
    config_row,
    f3,
    ms,
    pct,
    signed_pct,
    times,
)


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
        "Selected configurations (computed from stored votes)", config_headers(gold),
        [config_row(c, gold) for c in a["selected"]], a.get("selection", ""),
    ))

    meas = a.get("measured") or {}
    if meas.get("runs"):
        rows = []
        for r in meas["runs"]:
            m, c = r["measured"], r["computed"]
            lim = r.get("limit") or {}  # runs measured before the limit have none
            rows.append([
                " + ".join(r["workers"]), r["rule"] + (" + early exit" if r["early_exit"] else ""),
                str(r["items"]), times(m["speedup"]), times(c["speedup"]),
                signed_pct(r["gap"]["speedup_rel"]), times(lim.get("speedup")),
                times(lim.get("measured_over_limit")), times(m["cpu_speedup"]),
                times(c["cpu_speedup"]), signed_pct(r["gap"]["cpu_speedup_rel"]),
                pct(m["coverage"]), pct(c["coverage"]), pct(r["same_final_label_as_computed"]),
            ])
        ja = meas.get("judge_alone", {})
        out.append(Table(
            "Measured against computed (real cascade and judge alone, same items, one process)",
            ["workers", "rule", "items", "measured speedup", "computed", "gap",
             "hardware limit", "measured wall / limit", "measured CPU ratio", "computed", "gap",
             "measured coverage", "computed coverage", "same labels as computed"],
            rows,
            f"Judge alone ({meas.get('judge')}): {f3(ja.get('wall_s'))} s wall, "
            f"{f3(ja.get('cpu_s'))} s CPU; its labels agree with its stored votes on "
            f"{pct(ja.get('agreement_with_stored_votes'))} of the items. Gap = measured / "
            "computed - 1. Sequential workers, batches as in the bench, no vote store. "
            "Hardware limit: the speedup if the run cost only its models' own work (each text "
            "embedded once in big batches, workers that embed nothing at their stored cost, the "
            "judge's calls at its marginal cost: judge alone / items).",
        ))
    else:
        out.append(Table("Measured against computed", ["note"],
                         [[str(meas.get("skipped", "not run"))]]))

    out += _certified_tables(a, gold)
    out += _stream_tables(a)

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
        row = config_row(cs[0], gold)
        if len(cs) > 1:
            row[1] += f" (+{len(cs) - 1} with the same point)"
        rows.append(row)
    out.append(Table(
        "Pareto front: fewest judge calls for each level of agreement (sequential workers)",
        config_headers(gold), rows,
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
        config_headers(gold),
        [config_row(c, gold) for c in sorted(best.values(), key=lambda c: -(c["speedup"] or 0))],
    ))

    par = {(" + ".join(c["workers"]), c["rule"], c["early_exit"]): c
           for c in cfgs if c["parallel"]}
    rows = []
    for c in a["selected"]:
        for early in (False, True):
            p = par.get((" + ".join(c["workers"]), c["rule"], early))
            if p is not None:
                rows.append(config_row(p, gold))
    out.append(Table(
        "The selected worker sets with parallel workers (ideal: one core set per worker)",
        config_headers(gold), rows,
        "Parallel cost = slowest worker + judge; on a 2-core machine workers contend for the "
        "same cores, so real parallel runs are slower than this.",
    ))

    by = a.get("by_judge") or {}
    rows = []
    for j, d in by.items():
        for c in d.get("selected", []):
            rows.append([j, *config_row(c, gold)])
    if rows:
        out.append(Table("Best configurations with each model as the judge",
                         ["judge", *config_headers(gold)], rows))
    return out


def measured_speedup(a: dict[str, Any], workers: list[str], rule: str) -> str:
    for r in (a.get("measured") or {}).get("runs", []):
        if list(r["workers"]) == list(workers) and r["rule"] == rule and not r["early_exit"]:
            return times(r["measured"]["speedup"])
    return "-"


def target_name(scope: str, target: float) -> str:
    if scope == "dataset":
        return f"whole-data agreement >= {target:g}"
    if scope == "workers":
        return f"agreement on the workers' share >= {target:g}"
    return f"gold accuracy >= judge's - {target:g}"


def _certified_tables(a: dict[str, Any], gold: bool) -> list[Table]:
    cert = a.get("certified")
    if not cert:
        return []
    d, sizes = cert["delta"], cert["split_sizes"]
    h = ["target", "workers", "threshold", "judge calls", "e2e agree w/ judge"]
    if gold:
        h += ["acc cascade", "acc judge"]
    h += ["speedup computed", "measured", "violation rate"]
    rows = []
    for scope, t in cert["targets"]:
        r = (cert.get("best") or {}).get(f"{scope}@{t:g}")
        if r is None:
            rows.append([target_name(scope, t), "no worker set is certified", *["-"] * (len(h) - 2)])
            continue
        c = r["held"]
        row = [target_name(scope, t), " + ".join(r["workers"]), f"{r['threshold']:g}",
               pct(c["judge_call_rate"]), pct(c["e2e_agreement"])]
        if gold:
            row += [pct(c.get("e2e_accuracy")), pct(c.get("judge_accuracy"))]
        row += [times(c["speedup"]), measured_speedup(a, r["workers"], c["rule"]),
                pct(r["split_check"]["population_violation_rate"])]
        rows.append(row)
    held = "held" if cert.get("guarantee_held") else "did NOT hold"
    worst = ", ".join(f"{k} {pct(v)}" for k, v in cert["max_violation_by_scope"].items())
    out = [Table(
        f"Certified cascades (confident majority, delta {d:g}): certify on {sizes['certify']} "
        f"items, measure on {sizes['held']} others",
        h, rows,
        f"For each target, the fastest worker set whose threshold is certified on the certify "
        f"share ({sizes['certify']} items) with probability >= {1 - d:g}; every number after "
        f"'threshold' is measured on the held-out share ({sizes['held']} items) it never saw. "
        f"Workers that learn were fitted on a separate fit share ({cert.get('fit_source')}; on the "
        f"judge's labels, or on gold for the accuracy targets, '+gold'). Speedup computed from "
        f"each model's stored cost per item; measured: the real cascade against the judge alone "
        f"on the same held-out items. Violation rate: over {cert['splits']} random re-splits of "
        f"certify + held-out into halves, the share of splits whose certified threshold misses "
        f"the target on both shares together; the largest per scope over every worker set: "
        f"{worst} (must be <= {100 * d:g} %: {held}).",
    )]
    rows = []
    for r in cert["rows"]:
        c, sc = r["held"] or {}, r["split_check"]
        rows.append([
            target_name(r["scope"], r["target"]), " + ".join(r["workers"]),
            f"{r['threshold']:g}" if r["feasible"] else "none",
            pct(c.get("judge_call_rate")) if c else "-", times(c.get("speedup")) if c else "-",
            pct(c.get("e2e_accuracy")) if c else "-",
            pct(sc["feasible_share"]), pct(sc["mean_test_coverage"]),
            pct(sc["population_violation_rate"]), pct(sc["violation_rate"]),
        ])
    out.append(Table(
        "Certified thresholds for every worker set and target",
        ["target", "workers", "threshold", "judge calls (held-out)", "speedup (held-out)",
         "acc cascade (held-out)", "splits certified", "mean coverage (splits)",
         "violation rate", "violation rate (held half)"], rows,
    ))
    return out


def _stream_tables(a: dict[str, Any]) -> list[Table]:
    tables = []
    for st in a.get("streams") or []:
        cfg, first = st["settings"], st["runs"][0]
        rows = [[w["items"], pct(w["judge_call_rate"]), pct(w["warmup"]), pct(w["audit"]),
                 pct(w["escalated"]), str(w["decided_by_workers"])] for w in first["windows"]]
        tables.append(Table(
            f"Adaptive run: judge-call rate per window ({st['items']} items of {st.get('data')}, "
            f"workers {' + '.join(st.get('workers', []))})",
            ["items", "judge calls", "warm-up", "audit", "escalated", "decided by workers"],
            rows,
            f"classify --adaptive over the stream in a random order (seed 0): target whole-data "
            f"agreement {cfg['target']:g} with the judge, delta {cfg['delta']:g}, warm-up "
            f"{cfg['warmup']}, audit {pct(cfg['audit_rate'])}, re-certified every "
            f"{cfg['recertify_every']} items. {first['statement']}. Over {len(st['runs'])} "
            f"reshuffled streams: judge calls {pct(st['judge_call_rate']['mean'])} on average "
            f"(at most {pct(st['judge_call_rate']['max'])}), realised whole-data agreement with "
            f"the judge {pct(st['realised_agreement']['mean'])} on average (at least "
            f"{pct(st['realised_agreement']['min'])}); streams whose realised agreement missed "
            f"the target: {pct(st['violation_share'])} (must be <= {pct(cfg['delta'])}). "
            f"From {st.get('file', '?')}.",
        ))
    return tables


# ---------------------------------------------------------------- plots


def headline_tables(a: dict[str, Any]) -> Sequence[Table]:
    """The tables the CLI prints at the end of a bench."""
    ts = tables(a)
    return [t for t in ts if t.title.startswith(("Models", "Agreement matrix", "Selected",
                                                 "Measured", "Certified cascades",
                                                 "Adaptive run"))]
