"""What ``speculabel calibrate`` prints about its plan: the certified threshold per rule, the
expected judge calls and speedup, warnings about one-class references; and the per-model
offsets it measures before certifying."""

from __future__ import annotations

from typing import Any

import typer

from speculabel.cli.common import console


def warn_one_class(cal: Any, ref_name: str) -> None:
    """Calibration items whose reference labels are all one class certify nothing about the
    others: say so, whatever the workers (learning workers refuse such a fit share outright)."""
    data = cal.data
    if data is None:
        return
    classes = sorted({r for r in data.reference if r is not None})
    if len(classes) == 1:
        typer.secho(
            f"warning: every calibration item has the same reference label ({ref_name}: "
            f"{classes[0]!r}); a certificate on one class says nothing about the others: "
            "calibrate on items of every class", fg=typer.colors.YELLOW, err=True)


def _pct(value: float | None, signed: bool = False) -> str:
    """A share as a percentage for the plan table; ``-`` where there is none."""
    if value is None:
        return "-"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def measure_offsets(specs: list[str], task: Any, say: Any) -> dict[str, dict[str, float]]:
    """Contextual-calibration offsets of the LLM workers (three content-free inputs each)."""
    from speculabel.backends.registry import kind_of, load_backend
    from speculabel.calibration.offsets import contextual_offsets

    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        if kind_of(spec) not in ("llamacpp", "openai"):
            continue  # lexicons and learners have no prompt bias to measure
        backend = load_backend(spec)

        def score(its: Any, b: Any = backend) -> Any:
            return b.score(task, its)

        try:
            out[spec] = contextual_offsets(score, task.fields)
        except ValueError as e:
            say(f"  {spec}: no contextual offsets ({e})")
        finally:
            backend.close()
    return out


def print_plan(plan: Any, ref_name: str, n_ref: int) -> None:
    from rich.table import Table

    res = plan.result
    t = Table(title=f"calibration against the {ref_name} ({n_ref} items)", show_header=False)
    t.add_row("policy", plan.policy)
    t.add_row("method", f"{res.method}, target {res.target:g}, delta {res.delta:g}")
    t.add_row("items fit / certify", f"{plan.n_fit} / {plan.n_test}")
    signed = res.scope == "non-inferior"  # an accuracy loss, not an agreement
    if res.feasible and res.coverage > 0:
        side = "upper" if signed else "lower"
        t.add_row("threshold", f"{res.threshold:g}")
        t.add_row("expected coverage", f"{_pct(res.coverage)} decided by the workers")
        t.add_row("judge-call rate", _pct(res.judge_call_rate))
        t.add_row("agreement on the workers' items", _pct(res.agreement))
        quantity = {"dataset": "whole-data agreement",
                    "non-inferior": "accuracy loss"}.get(res.scope)
        if quantity:  # the certified quantity, when it is not the line above
            t.add_row(f"{quantity} (calibration)", _pct(res.estimate, signed))
        t.add_row(f"{quantity or 'agreement'}: {side} bound ({100 * (1 - res.delta):g}%)",
                  _pct(res.bound, signed))
    else:
        t.add_row("threshold", "none qualifies" if not res.feasible else
                  f"{res.threshold:g} only, where the workers decide no item")
        t.add_row("best single-threshold bound", _pct(res.best_bound, signed))
        if res.shortfall > 0:
            t.add_row("short by", f"{100 * res.shortfall:.1f} points")
        elif res.stopped_at is not None:
            t.add_row("test sequence stopped at", f"threshold {res.stopped_at:g}")
    for name, alt in plan.alternatives.items():
        desc = (f"threshold {alt.threshold:g}, coverage {100 * alt.coverage:.1f}%"
                if alt.feasible else "infeasible")
        t.add_row(f"(also tried {name})", desc)
    for w, v in plan.weights.items():
        t.add_row(f"weight {w}", f"{v:g}")
    for m, c in plan.calibration.items():
        kept = c.report.get("kept", {})
        what = []
        if kept.get("offsets"):
            what.append("contextual offsets")
        if kept.get("temperature"):
            what.append(f"temperature {c.temperature:g}")
        raw = c.report.get("raw", {})
        cc = c.report.get("contextual")
        acc = f"accuracy {100 * raw.get('accuracy', 0):.1f}%"
        if cc:
            acc += f" raw, {100 * cc.get('accuracy', 0):.1f}% contextual"
        t.add_row(f"calibration {m}", f"{', '.join(what) or 'none kept'} ({acc})")
    console(stderr=True).print(t)
