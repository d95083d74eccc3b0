"""The certificate, checked while serving: a random audit share also goes to the judge.

``calibrate`` certified, on a sample, that the cascade agrees with its judge at least ``target``
of the time (over the whole data set, judge-decided items agreeing, or over the workers' share).
While serving, a random share ``rate`` of the answered items is audited off the request path:
scope ``dataset`` draws from every decided item (a judge-decided one agrees without a call),
scope ``workers`` from the worker-decided ones; the judge labels each drawn worker-decided item
and the audit records whether the workers' label was the judge's.  Every draw is independent of
the item and its outcome, so the audited outcomes are Bernoulli(p) draws of the served stream's
agreement p.

**The running bounds are a confidence sequence** (a union bound over time of exact
Clopper-Pearson intervals): after the n-th audited item, with k agreements,

    L_n = CP_lower(k, n; a_n),  U_n = CP_upper(k, n; a_n),  a_n = alpha / (2 n (n + 1)),

(the one-sided exact Clopper-Pearson bounds, each at level a_n) so that, since
sum_n 2 a_n = alpha, P(L_n <= p <= U_n for every n at once) >= 1 - alpha: the bounds may be
read after every item, as often as one likes (anytime-valid), for a stream whose agreement p
does not change.  (Their running max / min would be valid too, but after a change of p they
can cross; the per-look bounds never do.)

States: ``checking`` (neither bound has crossed the target), ``confirmed`` (L_n >= target: the
certificate holds, at 1 - alpha), ``violated`` (U_n < target: the certificate is refuted at
level alpha; a lower bound below the target alone is not evidence against it, since every
sequence starts at L = 0).  On a violation the service says so (metric, log line), starts a
fresh sequence, and with ``fallback`` sends every item to the judge (each such item is then
audited) until the fresh sequence's L_n reaches the target again: re-certified.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from speculabel.records import Record

Scope = Literal["dataset", "workers"]
State = Literal["checking", "confirmed", "violated"]


@dataclass(frozen=True)
class AuditSettings:
    """What the running check promises to watch (see the module docstring)."""

    target: float
    scope: Scope = "dataset"
    rate: float = 0.05
    alpha: float = 0.05
    #: send every item to the judge while the certificate is refuted, until re-certified
    fallback: bool = False
    seed: int | None = None
    #: audits waiting for the judge at most; a batch drawn while the queue is full is not
    #: audited at all (a skip that depends on load only, never on an item's outcome)
    max_queue: int = 256

    def check(self) -> None:
        if not 0 < self.target < 1:
            raise ValueError(f"--audit-target must be between 0 and 1, got {self.target:g}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"--audit-rate must be between 0 and 1, got {self.rate:g}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"--audit-alpha must be between 0 and 1, got {self.alpha:g}")
        if self.scope not in ("dataset", "workers"):
            raise ValueError(f"audit scope must be dataset or workers, not {self.scope!r}")


def step_bounds(k: int, n: int, alpha: float) -> tuple[float, float]:
    """The Clopper-Pearson interval of the n-th look: each side at ``alpha / (2 n (n + 1))``."""
    from speculabel.certify.binomial import upper_bound

    if n <= 0:
        return 0.0, 1.0
    a = alpha / (2.0 * n * (n + 1))
    lower = 1.0 - upper_bound(n - k, n, a)  # the lower bound on p is 1 - an upper bound on 1-p
    return lower, upper_bound(k, n, a)


@dataclass
class Sequence:
    """One confidence sequence: counts since it started and its running bounds."""

    n: int = 0
    k: int = 0
    lower: float = 0.0
    upper: float = 1.0

    def observe(self, agree: bool, alpha: float) -> None:
        self.n += 1
        self.k += int(agree)
        self.lower, self.upper = step_bounds(self.k, self.n, alpha)

    @property
    def estimate(self) -> float | None:
        return self.k / self.n if self.n else None


class Audit:
    """Draws the audit share, keeps the running bounds and the state; not thread-safe (the
    model thread owns it; the metrics read :meth:`snapshot`, a plain dict)."""

    def __init__(self, settings: AuditSettings) -> None:
        settings.check()
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.seq = Sequence()
        self.state: State = "checking"
        self.force_judge = False
        self.epoch = 0  # fresh sequences started (one per violation)
        self.audited = 0  # every audited item, over every sequence
        self.agreed = 0

    # ------------------------------------------------------------------ drawing
    def eligible(self, rec: Record) -> bool:
        """Can this answered item be audited: decided (no error), and in the scope's share."""
        if rec.error or rec.label is None:
            return False
        return rec.decided_by == "workers" or (self.settings.scope == "dataset"
                                               and rec.decided_by == "judge")

    def draw(self, records: list[Record], queued: int) -> list[int]:
        """Places of the records to audit: each eligible one with probability ``rate``; none
        when the audit queue is full."""
        if queued >= self.settings.max_queue:
            return []
        return [i for i, r in enumerate(records)
                if self.eligible(r) and self.rng.random() < self.settings.rate]

    # ------------------------------------------------------------------ observing
    def observe(self, agree: bool) -> dict[str, Any] | None:
        """Add one audited outcome; return an event (for the log) when the state changed."""
        target = self.settings.target
        self.audited += 1
        self.agreed += int(agree)
        self.seq.observe(agree, self.settings.alpha)
        if self.state != "violated" and self.seq.upper < target:
            self.state = "violated"
            self.force_judge = self.settings.fallback
            event = self._event("violated", f"the certificate is refuted: agreement with the judge "
                                f"is below {target:g} (upper bound {self.seq.upper:.4f} after "
                                f"{self.seq.n} audited items, level {self.settings.alpha:g})"
                                + ("; every item goes to the judge until re-certified"
                                   if self.force_judge else ""))
            self.seq = Sequence()  # re-certification needs fresh evidence
            self.epoch += 1
            return event
        if self.state != "confirmed" and self.seq.lower >= target:
            was = self.state
            self.state = "confirmed"
            self.force_judge = False
            what = "re-certified" if was == "violated" else "confirmed"
            return self._event(what, f"the certificate is {what}: agreement with the judge is at "
                                     f"least {target:g} (lower bound {self.seq.lower:.4f} after "
                                     f"{self.seq.n} audited items, level {self.settings.alpha:g})")
        return None

    def _event(self, what: str, message: str) -> dict[str, Any]:
        return {"event": "audit_state", "state": self.state, "change": what, "message": message,
                **self.snapshot()}

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, Any]:
        """Everything the metrics show and a restart needs (one JSON object)."""
        s = self.settings
        return {
            "audit": {
                "state": self.state, "force_judge": self.force_judge, "epoch": self.epoch,
                "n": self.seq.n, "k": self.seq.k, "lower": self.seq.lower,
                "upper": self.seq.upper,
                "estimate": None if self.seq.estimate is None else round(self.seq.estimate, 6),
                "audited_total": self.audited, "agreed_total": self.agreed,
                "target": s.target, "scope": s.scope, "rate": s.rate, "alpha": s.alpha,
                "fallback": s.fallback,
            }
        }

    def restore(self, snapshot: dict[str, Any]) -> bool:
        """Go on from a snapshot of the same target, scope and level (a restart with the same
        log); return False (and start afresh) when it was made under other settings."""
        a = snapshot.get("audit") or {}
        s = self.settings
        if (a.get("target"), a.get("scope"), a.get("alpha")) != (s.target, s.scope, s.alpha):
            return False
        self.state = a["state"]
        self.force_judge = bool(a["force_judge"]) and s.fallback
        self.epoch = int(a["epoch"])
        self.seq = Sequence(int(a["n"]), int(a["k"]), float(a["lower"]), float(a["upper"]))
        self.audited, self.agreed = int(a["audited_total"]), int(a["agreed_total"])
        return True
