"""What an adaptive run can say at the end: the certified statement, the judge-call rate per
window of items, and the agreement the audit measured.  Written as ``OUT.adaptive.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from speculabel.adaptive.plan import level, planned_looks
from speculabel.adaptive.state import AdaptiveState
from speculabel.records import Record


def statement(state: AdaptiveState) -> str:
    """The certified statement of the run, in words."""
    s = state.settings
    n_audit = len(state.audits)
    k = planned_looks(s, state.n_items)
    if not state.certified_looks:
        return (f"no threshold was certified (audit n = {n_audit}): every item went to the "
                f"judge, so every label is the judge's")
    what = ("whole-data-set agreement with the judge" if s.scope == "dataset"
            else "agreement with the judge on the items the workers decided")
    done = len(state.looks)
    split = ", ".join(f"{level(s, state.n_items, i + 1):.3g}" for i in range(k))
    looks = (f"{done} of {k} planned looks done; delta {s.delta:g} spent over them by the items "
             f"left after each: {split}")
    return (f"{what} >= {s.target:g} with probability >= {1 - s.delta:g} ({looks}; "
            f"audit n = {n_audit})")


def audit_estimate(state: AdaptiveState) -> dict[str, Any]:
    """What the audit saw after the warm-up: how often the workers in force would have decided
    an audited item, and how often they would have disagreed with the judge."""
    rows = [r for r in state.audits.values() if r.position >= state.settings.warmup]
    if not rows:
        return {"n": 0}
    accepted = [r for r in rows if r.accepted]
    wrong = sum(r.worker_label != r.judge for r in accepted)
    return {"n": len(rows), "would_decide": len(accepted) / len(rows),
            "agreement_on_decided": 1 - wrong / len(accepted) if accepted else None,
            "whole_data_disagreement": wrong / len(rows)}


def windows(records: Sequence[Record], positions: Mapping[str, int], size: int
            ) -> list[dict[str, Any]]:
    """Judge-call rate (and why the judge was called) per window of ``size`` items of the
    processing order."""
    by_pos = sorted(((positions[r.id], r) for r in records
                     if r.id is not None and r.id in positions), key=lambda p: p[0])
    out = []
    for start in range(0, len(by_pos), size):
        w = [r for _, r in by_pos[start : start + size]]
        judged = [r for r in w if r.decided_by == "judge"]
        out.append({
            "items": f"{start + 1}-{start + len(w)}", "end": start + len(w),
            "judge_call_rate": len(judged) / len(w),
            "warmup": sum("warm-up" in r.rule for r in judged) / len(w),
            "audit": sum(r.rule.endswith(": audit") for r in judged) / len(w),
            "escalated": sum("escalated" in r.rule for r in judged) / len(w),
            "decided_by_workers": sum(r.decided_by == "workers" for r in w),
        })
    return out


def report(state: AdaptiveState, records: Sequence[Record], positions: Mapping[str, int],
           window: int = 250) -> dict[str, Any]:
    decided = [r for r in records if r.label is not None]
    judged = sum(r.decided_by == "judge" for r in decided)
    return {
        "statement": statement(state),
        "settings": state.settings.to_json(),
        "items": len(records),
        "judge_calls": judged,
        "judge_call_rate": judged / len(decided) if decided else None,
        "threshold": state.threshold,
        "planned_looks": planned_looks(state.settings, state.n_items),
        "looks": [asdict(lk) for lk in state.looks],
        "audit": audit_estimate(state),
        "windows": windows(records, positions, window),
    }


def write_report(data: Mapping[str, Any], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path
