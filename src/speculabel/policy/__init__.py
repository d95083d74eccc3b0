"""Acceptance rules: when do the workers' votes stand, and when does the judge decide?

One rule per module behind :class:`Policy` (one abstract method, ``decide``) and a name -> class
registry, :data:`POLICIES`.  Conventions shared by every rule: :mod:`speculabel.policy.base`.

| rule | accepts when |
|---|---|
| ``majority`` | one label has strictly more than half of the answering votes |
| ``unanimous`` | every worker answered and all agree |
| ``confident-majority`` | a majority whose mean probability is at least the threshold |
| ``weighted`` | the reliability-weighted mass of the best label is at least the threshold |
| ``confident-margin`` | a majority whose mean margin (winner minus runner-up) is at least the threshold |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from speculabel.policy.base import Decision, Policy, PolicyError
from speculabel.policy.confident import ConfidentMajority
from speculabel.policy.majority import Majority
from speculabel.policy.margin import ConfidentMargin
from speculabel.policy.unanimous import Unanimous
from speculabel.policy.weighted import WeightedVote

RuleName = Literal["majority", "unanimous", "confident-majority", "weighted", "confident-margin"]
#: the registry: rule name -> class
POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (Majority, Unanimous, ConfidentMajority, WeightedVote,
                              ConfidentMargin)
}
assert set(POLICIES) == set(get_args(RuleName))
#: the rules that take a threshold (and that ``calibrate`` can certify)
THRESHOLD_RULES = tuple(name for name, cls in POLICIES.items() if cls.uses_threshold)


def check_policy(name: str, threshold: float | None) -> None:
    """Refuse a rule name that does not exist, a thresholded rule without a threshold, and a
    threshold given to a rule that would ignore it (each a silent surprise otherwise)."""
    cls = POLICIES.get(name)
    if cls is None:
        raise PolicyError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    if cls.uses_threshold and threshold is None:
        raise PolicyError(f"policy {name!r} needs a threshold (--threshold, between 0 and 1)")
    if not cls.uses_threshold and threshold is not None:
        raise PolicyError(
            f"policy {name!r} takes no threshold, but threshold {threshold:g} was given; "
            f"thresholds apply to {' and '.join(THRESHOLD_RULES)}"
        )


def make_policy(
    name: str,
    threshold: float | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    min_answered: int | None = None,
) -> Policy:
    """A rule by name (the CLI's ``--policy``), checked by :func:`check_policy`."""
    check_policy(name, threshold)
    if name == "majority":
        return Majority(min_answered)
    if name == "unanimous":
        return Unanimous(min_answered)
    assert threshold is not None
    if name == "confident-majority":
        return ConfidentMajority(threshold, min_answered)
    if name == "confident-margin":
        return ConfidentMargin(threshold, min_answered)
    return WeightedVote(weights, threshold, min_answered)


def policy_from_rule(rule: str, weights: Mapping[str, float] | None = None) -> Policy:
    """Rebuild a rule from :meth:`Policy.describe` (``majority``, ``confident-majority@0.8``)."""
    name, sep, thr = rule.partition("@")
    return make_policy(name, float(thr) if sep else None, weights=weights)


__all__ = [
    "POLICIES",
    "THRESHOLD_RULES",
    "ConfidentMajority",
    "ConfidentMargin",
    "Decision",
    "Majority",
    "Policy",
    "PolicyError",
    "RuleName",
    "Unanimous",
    "WeightedVote",
    "check_policy",
    "make_policy",
    "policy_from_rule",
]
