"""The report's plots (matplotlib, Agg backend; PNG files beside the report)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speculabel.report.format import mode, num

PLOTS = {
    "agreement": "agreement_matrix.png",
    "pareto": "judge_rate_vs_agreement.png",
    "latency": "latency.png",
}


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
    vals = [[num(a["agreement_matrix"][r][c]) or 0.0 for c in names] for r in names]
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
        p50.append(1000 * (num(m["latency_p50_s"]) or 0.0))
        p95.append(1000 * (num(m["latency_p95_s"]) or 0.0))
    for k, c in enumerate(a["selected"], 1):
        labels.append(f"#{k} " + "+".join(c["workers"]) + f"\n{c['rule']}, {mode(c)}")
        p50.append(1000 * (num(c["latency_p50_s"]) or 0.0))
        p95.append(1000 * (num(c["latency_p95_s"]) or 0.0))
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


def _plot_certified(a: dict[str, Any], path: Path) -> None:
    cert = a["certified"]
    with _figure(path, (8, 5)) as (_fig, ax):
        sets: dict[str, list[tuple[float, float]]] = {}
        for r in cert["rows"]:
            if r["scope"] != "dataset":
                continue
            rate = r["held"]["judge_call_rate"] if r["held"] else 1.0
            sets.setdefault(" + ".join(r["workers"]), []).append((r["target"], rate))
        for name, pts in sets.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel(f"certified whole-data agreement with the judge (delta {cert['delta']:g})")
        ax.set_ylabel("judge-call rate (labels bought included)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("Judge calls needed for each target (1.0 = no cut certified)")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)


def _plot_streams(a: dict[str, Any], path: Path) -> None:
    with _figure(path, (8, 4.8)) as (_fig, ax):
        for st in a["streams"]:
            wins = st["runs"][0]["windows"]
            ax.plot([w["end"] for w in wins], [w["judge_call_rate"] for w in wins], marker="o",
                    label=f"{st['task']} ({' + '.join(st.get('workers', []))})")
        ax.set_xlabel("items of the stream (the judge's labels accumulate)")
        ax.set_ylabel("judge-call rate per window")
        ax.set_ylim(0, 1.02)
        ax.set_title("Adaptive runs: warm-up, audit and escalations per window")
        ax.legend(loc="upper right", fontsize=7)
        ax.grid(alpha=0.3)


def write_plots(a: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out = {k: out_dir / v for k, v in PLOTS.items()}
    _plot_agreement(a, out["agreement"])
    _plot_pareto(a, out["pareto"])
    _plot_latency(a, out["latency"])
    if a.get("certified"):
        out["certified"] = out_dir / "judge_rate_vs_target.png"
        _plot_certified(a, out["certified"])
    if a.get("streams"):
        out["stream"] = out_dir / "adaptive_stream.png"
        _plot_streams(a, out["stream"])
    return out


# ---------------------------------------------------------------- documents
