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

The check is repeated during the run, so delta is spent over the ``K`` looks planned from the
input size before the run starts (a union bound: every certificate issued during the run holds
at once with probability at least ``1 - delta``).  Look ``k`` at position ``p_k`` gets
``delta * (N - p_k) / sum_j (N - p_j)``: its share of the items still to come, so the first look,
whose certificate serves most of the input, is tested at the loosest level (on 1,000 items with
the default warm-up and spacing: 0.073 and 0.027 of a delta of 0.1, where an even split gave
each 0.05).  A look is planned only where items remain after it.  The
threshold moves only when a look certifies it: a candidate that fails is dropped and the workers
keep the state the last certificate was issued for.  Items processed under a certified state
have, in expectation over the random order, agreement at least the target (scope ``dataset``:
over all items, judge-decided ones agreeing; ``workers``: on the items the workers decide); the
items before the first certificate all go to the judge.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np

from speculabel.cascade.config import AdaptiveSettings

__all__ = ["AdaptiveSettings", "Phase", "level", "look_due", "look_positions", "order", "phase",
           "planned_looks", "uniform"]

Phase = Literal["warmup-train", "warmup-audit", "audit", "run"]


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


def look_positions(s: AdaptiveSettings, n_items: int) -> list[int]:
    """Where the looks fall (items processed before each): at the end of the warm-up, then every
    ``recertify_every`` items, as long as items remain after the look."""
    return list(range(s.warmup, n_items, s.recertify_every))


def planned_looks(s: AdaptiveSettings, n_items: int) -> int:
    """Looks planned for ``n_items`` (at least one, so that a level is always defined)."""
    return max(1, len(look_positions(s, n_items)))


def look_due(s: AdaptiveSettings, processed: int) -> int | None:
    """The look (1-based) that is due once ``processed`` items of the order are done, if any."""
    if processed < s.warmup:
        return None
    return 1 + (processed - s.warmup) // s.recertify_every


def level(s: AdaptiveSettings, n_items: int, look: int = 1) -> float:
    """Look ``look``'s test level: its share of delta, by the items still to come after it;
    0 for a look that is not planned (no item remains to decide)."""
    pos = look_positions(s, n_items)
    if not pos:
        return s.delta if look == 1 else 0.0
    if not 1 <= look <= len(pos):
        return 0.0
    left = [n_items - p for p in pos]
    return s.delta * left[look - 1] / sum(left)
