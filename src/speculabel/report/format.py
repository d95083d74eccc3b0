"""Formatting for the report: numbers as text, and a plain table that renders as Markdown or HTML."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any


def num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def f3(x: Any) -> str:
    v = num(x)
    return "-" if v is None else f"{v:.3f}"


def pct(x: Any) -> str:
    v = num(x)
    return "-" if v is None else f"{100 * v:.1f} %"


def ms(x: Any) -> str:
    v = num(x)
    if v is None:
        return "-"
    return f"{1000 * v:.2f}" if v < 0.01 else f"{1000 * v:.0f}"


def times(x: Any) -> str:
    v = num(x)
    return "-" if v is None else f"{v:.2f}x"


def signed_pct(x: Any) -> str:
    v = num(x)
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


def config_row(c: dict[str, Any], gold: bool) -> list[str]:
    row = [
        " + ".join(c["workers"]), c["rule"], mode(c), pct(c["coverage"]),
        pct(c["agreement_decided"]), pct(c["e2e_agreement"]),
    ]
    if gold:
        row.append(pct(c.get("e2e_accuracy")))
    row += [pct(c["judge_call_rate"]), ms(c["latency_p50_s"]), ms(c["latency_p95_s"]),
            ms(c["cpu_mean_s"]), times(c["speedup"]), times(c["cpu_speedup"])]
    return row


def config_headers(gold: bool) -> list[str]:
    h = ["workers", "rule", "mode", "coverage", "agree on decided", "e2e agree w/ judge"]
    if gold:
        h.append("e2e acc (gold)")
    return [*h, "judge calls", "p50 ms", "p95 ms", "CPU ms/item", "speedup", "CPU speedup"]
