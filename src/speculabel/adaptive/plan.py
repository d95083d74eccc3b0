"""The settings of an adaptive run and the decisions that follow from them alone.

Everything here is a pure function of the settings, the input size and an item's key, so a
resumed run takes the very same decisions: which items are the warm-up, which are audited, when
the threshold is looked at again, and at which level each look is tested.

Why the audit certifies, and at what level
-------------------------------------------
The input is processed in a random order (seeded), so the items are exchangeable.  An item is
*audited* with a probability that depends on nothing but a hash of (seed, item): half of the
warm-up, then ``audit_rate`` of every later item.  The audited items are therefore a uniform
random sample of the input, whatever the workers say about them; they go to the judge, their
record carries the judge's label, and they never train a worker.  At each *look* the learning
workers are refitted on the judge labels of the other judge-decided items (warm-up and
escalated), the candidate is scored on every audited item so far, and the confident-majority
threshold is certified on them with the exact binomial test of :mod:`speculabel.certify` for the
run's scope and target.

The check is repeated during the run, so each look is tested at ``delta / K``, where ``K`` is the
number of looks planned from the input size before the run starts (a union bound: every
certificate issued during the run holds at once with probability at least ``1 - delta``).  The
threshold moves only when a look certifies it: a candidate that fails is dropped and the workers
keep the state the last certificate was issued for.  Items processed under a certified state
have, in expectation over the random order, agreement at least the target (scope ``dataset``:
over all items, judge-decided ones agreeing; ``workers``: on the items the workers decide); the
items before the first certificate all go to the judge.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Phase = Literal["warmup-train", "warmup-audit", "audit", "run"]


@dataclass(frozen=True)
class AdaptiveSettings:
    """What the user chose (flags or cascade.toml); see the module docstring."""

    target: float = 0.85
    delta: float = 0.1
    scope: Literal["dataset", "workers"] = "dataset"
    audit_rate: float = 0.05
    warmup: int = 200
    recertify_every: int = 500
    seed: int = 0

    def check(self) -> None:
        if self.scope not in ("dataset", "workers"):
            raise ValueError(f"adaptive runs certify scope dataset or workers, not {self.scope!r}")
        if not 0 < self.target < 1:
            raise ValueError("--target must be between 0 and 1, both excluded, "
                             f"got {self.target:g}")
        if not 0 < self.delta < 1:
            raise ValueError("--delta must be between 0 and 1, both excluded, "
                             f"got {self.delta:g}")
        if not 0 < self.audit_rate < 1:
            raise ValueError("--audit-rate must be between 0 and 1, both excluded, "
                             f"got {self.audit_rate:g}")
        if self.warmup < 2:
            raise ValueError(f"--warmup must be at least 2 items, got {self.warmup}")
        if self.recertify_every < 1:
            raise ValueError("--recertify-every must be at least 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def order(keys: list[str], seed: int) -> list[int]:
    """The processing order: a seeded permutation of the input rows."""
    return np.random.default_rng(seed).permutation(len(keys)).tolist()


def uniform(seed: int, key: str) -> float:
    """A number in [0, 1) from (seed, item key) alone: the same on every run."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def phase(s: AdaptiveSettings, position: int, key: str) -> Phase:
    """What happens to the item at ``position`` of the processing order."""
    u = uniform(s.seed, key)
    if position < s.warmup:
        return "warmup-audit" if u < 0.5 else "warmup-train"
    return "audit" if u < s.audit_rate else "run"


def planned_looks(s: AdaptiveSettings, n_items: int) -> int:
    """Looks planned for ``n_items``: at the end of the warm-up, then every
    ``recertify_every`` items."""
    after = max(0, n_items - s.warmup)
    return 1 + math.ceil(after / s.recertify_every) if n_items >= s.warmup else 1


def look_due(s: AdaptiveSettings, processed: int) -> int | None:
    """The look (1-based) that is due once ``processed`` items of the order are done, if any."""
    if processed < s.warmup:
        return None
    return 1 + (processed - s.warmup) // s.recertify_every


def level(s: AdaptiveSettings, n_items: int) -> float:
    """Each look's test level: ``delta`` split evenly over the planned looks."""
    return s.delta / planned_looks(s, n_items)
