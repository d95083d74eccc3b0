"""report.json (every number), report.md (tables) and a self-contained report.html.

The HTML file embeds its plots as base64 and links nothing, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from speculabel.report.format import mode, ms, pct, signed_pct, times
from speculabel.report.plots import write_plots
from speculabel.report.tables import measured_speedup, tables, target_name


def _headline(a: dict[str, Any]) -> list[str]:
    b = a.get("bench") or {}
    ds = b.get("dataset") or {}
    lines = [
        f"- task: {b.get('task', '?')} ({a['n']} items"
        + (f", data: {ds.get('name')}" if ds.get("name") else "") + ")",
        f"- judge: {a['judge']}; workers: every pair and triple of the other stored models "
        "(and every set of one to three, workers that learn included, in the certified section)",
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
            + (f"; hardware limit {times(r['limit'].get('speedup'))} (measured wall time "
               f"{times(r['limit'].get('measured_over_limit'))} the limit's)"
               if r.get("limit") else "")
        )
    cert = a.get("certified") or {}
    for scope, t in cert.get("targets", []):
        r = (cert.get("best") or {}).get(f"{scope}@{t:g}")
        if r is None:
            lines.append(f"- certified {target_name(scope, t)}: no worker set")
            continue
        c = r["held"]
        lines.append(
            f"- certified {target_name(scope, t)} (delta {cert['delta']:g}): "
            f"{' + '.join(r['workers'])} at {r['threshold']:g}: judge calls "
            f"{pct(c['judge_call_rate'])} on held-out items, speedup {times(c['speedup'])} "
            f"computed / {measured_speedup(a, r['workers'], c['rule'])} measured"
            + (f", accuracy {pct(c.get('e2e_accuracy'))} (judge {pct(c.get('judge_accuracy'))})"
               if c.get("e2e_accuracy") is not None else "")
        )
    for st in a.get("streams") or []:
        lines.append(
            f"- adaptive run over {st['items']} items ({' + '.join(st.get('workers', []))}): "
            f"judge calls {pct(st['judge_call_rate']['first'])} (mean over "
            f"{len(st['runs'])} streams {pct(st['judge_call_rate']['mean'])}), realised "
            f"whole-data agreement {pct(st['realised_agreement']['mean'])}, streams missing the "
            f"target {pct(st['violation_share'])}"
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
