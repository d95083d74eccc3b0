"""The shapes that travel between backends, policies, the cascade and the stores.

A :class:`Vote` is one model's answer for one item: a full probability distribution over the
task's labels (never a parsed string), or an abstention with its reason.  A :class:`Record` is
what the cascade writes for one item: the final label, who decided it, and every vote that led
there, so any decision can be audited or re-scored later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

DecidedBy = Literal["workers", "judge"]


def probability_problem(label: str, p: object) -> str | None:
    """Why ``p`` cannot be a label's probability (not a number, NaN, infinite, negative), or
    None.  NaN compares false with every threshold, so a vote carrying it would pass any
    confidence check: such a vote must be an abstention."""
    import math
    import numbers

    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        return f"probability of {label!r} is not a number: {p!r}"
    if not math.isfinite(p) or p < 0:
        return f"probability of {label!r} is {p!r}"
    return None


@dataclass(frozen=True)
class Item:
    """One input: an id and its named text fields (``text``, or ``text_a``/``text_b``), and the
    1-based data row it came from (when it came from a table)."""

    id: str
    fields: dict[str, str]
    truncated: bool = False
    row: int | None = None


@dataclass
class Vote:
    """One model's distribution over the labels for one item.

    ``label`` is the arg-max label, ``None`` when the model abstained (``error`` says why;
    ``retryable`` marks an abstention from a passing fault, such as a server that is down, so
    that the item is asked again on a later run instead of being decided from it).
    ``method`` says how the distribution was obtained: ``logprobs`` (exact label scoring),
    ``choice`` (constrained choice, confidence from the endpoint or none), ``text`` (strict
    parse of free text, only when asked for), ``classifier`` (a non-LLM model).
    """

    model: str
    label: str | None
    probs: dict[str, float]
    latency_s: float = 0.0
    method: str = "logprobs"
    error: str | None = None
    truncated: bool = False
    cached: bool = False
    retryable: bool = False

    @property
    def abstained(self) -> bool:
        return self.label is None

    @property
    def confidence(self) -> float:
        """Probability the model gives its own label (0 for an abstention)."""
        if self.label is None:
            return 0.0
        return float(self.probs.get(self.label, 0.0))

    @classmethod
    def from_probs(
        cls,
        model: str,
        probs: dict[str, float],
        *,
        latency_s: float = 0.0,
        method: str = "logprobs",
        truncated: bool = False,
    ) -> Vote:
        """Build a vote from a distribution; ties go to the first label in task order."""
        if not probs:
            raise ValueError(f"{model}: empty distribution")
        best = max(probs, key=lambda k: probs[k])
        return cls(model, best, dict(probs), latency_s, method, None, truncated)

    @classmethod
    def abstain(
        cls,
        model: str,
        reason: str,
        *,
        latency_s: float = 0.0,
        method: str = "",
        retryable: bool = False,
    ) -> Vote:
        return cls(model, None, {}, latency_s, method, reason, retryable=retryable)

    def to_json(self) -> dict[str, Any]:
        from speculabel.redact import redact

        d: dict[str, Any] = {
            "model": redact(self.model),
            "label": self.label,
            "probs": {k: round(v, 6) for k, v in self.probs.items()},
            "latency_s": round(self.latency_s, 6),
            "method": self.method,
        }
        if self.error is not None:
            d["error"] = redact(self.error)
        if self.truncated:
            d["truncated"] = True
        if self.cached:
            d["cached"] = True
        if self.retryable:
            d["retryable"] = True
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Vote:
        return cls(
            model=d["model"],
            label=d.get("label"),
            probs={k: float(v) for k, v in (d.get("probs") or {}).items()},
            latency_s=float(d.get("latency_s", 0.0)),
            method=d.get("method", "logprobs"),
            error=d.get("error"),
            truncated=bool(d.get("truncated", False)),
            cached=bool(d.get("cached", False)),
            retryable=bool(d.get("retryable", False)),
        )


def normalise_logprobs(logprobs: dict[str, float]) -> dict[str, float]:
    """Softmax over label log-probabilities: the renormalised distribution over the label set."""
    m = max(logprobs.values())
    exps = {k: math.exp(v - m) for k, v in logprobs.items()}
    z = sum(exps.values())
    return {k: v / z for k, v in exps.items()}


#: why a record has no label: ``input`` (a bad row: the record is keyed by its row number),
#: ``judge`` (the judge answered but could not label the item), ``no_judge`` (the item was
#: escalated but the cascade has no judge)
ErrorKind = Literal["input", "judge", "no_judge"]
#: the kinds a rerun tries again; ``input`` and ``judge`` are final (the same row, or the same
#: judge on the same item, gives the same error)
RETRYABLE_ERRORS: frozenset[str] = frozenset({"no_judge"})


@dataclass
class Record:
    """The cascade's output for one item, one JSON line in the results file.

    ``id`` is ``None`` only for a bad row (``error_kind="input"``), which ``row`` identifies;
    ``run`` is the fingerprint of the settings that made the record (see the results header).
    """

    id: str | None
    label: str | None
    decided_by: DecidedBy | None
    votes: list[Vote] = field(default_factory=list)
    judge_vote: Vote | None = None
    latency_s: float = 0.0
    rule: str = ""
    truncated: bool = False
    error: str | None = None
    error_kind: ErrorKind | None = None
    row: int | None = None
    run: str | None = None
    #: where the item stood in the input of the call that made this record (0-based; not
    #: written to the results file)
    position: int | None = field(default=None, compare=False, repr=False)

    @property
    def retryable(self) -> bool:
        return self.error_kind in RETRYABLE_ERRORS

    def distribution(self) -> dict[str, float]:
        """The decider's distribution over the labels: the judge's vote when the judge
        decided, the mean of the answering workers' votes when they did; empty without a label."""
        if self.label is None:
            return {}
        if self.decided_by == "judge" and self.judge_vote is not None:
            return dict(self.judge_vote.probs)
        answered = [v for v in self.votes if v.label is not None]
        labels = {lab for v in answered for lab in v.probs}
        return {lab: sum(v.probs.get(lab, 0.0) for v in answered) / len(answered)
                for lab in sorted(labels)} if answered else {}

    @property
    def confidence(self) -> float | None:
        """The probability the decider gives the final label (None without a label)."""
        if self.label is None:
            return None
        return float(self.distribution().get(self.label, 0.0))

    def to_json(self) -> dict[str, Any]:
        from speculabel.redact import redact

        d: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "decided_by": self.decided_by,
            "rule": self.rule,
            "votes": [v.to_json() for v in self.votes],
            "judge_vote": self.judge_vote.to_json() if self.judge_vote else None,
            "latency_s": round(self.latency_s, 6),
            "truncated": self.truncated,
            "error": None if self.error is None else redact(self.error),
        }
        if self.error_kind is not None:
            d["error_kind"] = self.error_kind
        if self.row is not None:
            d["row"] = self.row
        if self.run is not None:
            d["run"] = self.run
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        jv = d.get("judge_vote")
        rid = d["id"]
        row = d.get("row")
        return cls(
            id=None if rid is None else str(rid),
            label=d.get("label"),
            decided_by=d.get("decided_by"),
            votes=[Vote.from_json(v) for v in d.get("votes", [])],
            judge_vote=Vote.from_json(jv) if jv else None,
            latency_s=float(d.get("latency_s", 0.0)),
            rule=d.get("rule", ""),
            truncated=bool(d.get("truncated", False)),
            error=d.get("error"),
            error_kind=d.get("error_kind"),
            row=None if row is None else int(row),
            run=d.get("run"),
        )
