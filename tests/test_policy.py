"""Acceptance rules against every vote combination (hypothesis) and hand-made cases."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speculabel.policy import ConfidentMajority, Majority, Unanimous, WeightedVote, make_policy
from speculabel.records import Vote

LABELS = ["negative", "neutral", "positive"]


def vote(model: str, label: str | None, p: float = 0.9) -> Vote:
    if label is None:
        return Vote.abstain(model, "down")
    rest = (1 - p) / (len(LABELS) - 1)
    return Vote.from_probs(model, {lab: (p if lab == label else rest) for lab in LABELS})


votes_st = st.lists(
    st.tuples(st.sampled_from([*LABELS, None]), st.floats(0.34, 1.0)), min_size=1, max_size=3
)


def build(spec: list[tuple[str | None, float]]) -> list[Vote]:
    return [vote(f"w{i}", lab, p) for i, (lab, p) in enumerate(spec)]


@given(votes_st)
def test_majority_matches_definition(spec: list[tuple[str | None, float]]) -> None:
    votes = build(spec)
    d = Majority().decide(votes)
    answered = [v.label for v in votes if v.label is not None]
    need = min(2, len(votes))
    counts = Counter(answered)
    if len(answered) < need or not counts:
        assert not d.accepted
        return
    label, top = counts.most_common(1)[0]
    strict = top * 2 > len(answered) and list(counts.values()).count(top) == 1
    assert d.accepted == strict
    if d.accepted:
        assert d.label == label


@given(votes_st)
def test_unanimous_needs_everyone(spec: list[tuple[str | None, float]]) -> None:
    votes = build(spec)
    d = Unanimous().decide(votes)
    labels = [v.label for v in votes]
    assert d.accepted == (None not in labels and len(set(labels)) == 1)


@given(votes_st, st.floats(0.0, 1.0))
def test_confident_majority_is_majority_plus_confidence(
    spec: list[tuple[str | None, float]], threshold: float
) -> None:
    votes = build(spec)
    maj = Majority().decide(votes)
    d = ConfidentMajority(threshold).decide(votes)
    if not maj.accepted:
        assert not d.accepted
        return
    agreeing = [v for v in votes if v.label == maj.label]
    mean = sum(v.probs[maj.label] for v in agreeing) / len(agreeing)  # type: ignore[index]
    assert d.accepted == (mean >= threshold)
    assert d.support == pytest.approx(mean)


@given(votes_st)
def test_threshold_zero_equals_majority(spec: list[tuple[str | None, float]]) -> None:
    votes = build(spec)
    assert ConfidentMajority(0.0).decide(votes).accepted == Majority().decide(votes).accepted


def test_two_workers_must_agree() -> None:
    assert Majority().decide([vote("a", "positive"), vote("b", "positive")]).accepted
    d = Majority().decide([vote("a", "positive"), vote("b", "negative")])
    assert not d.accepted and d.reason == "tie"


def test_two_of_three() -> None:
    d = Majority().decide([vote("a", "positive"), vote("b", "negative"), vote("c", "positive")])
    assert d.accepted and d.label == "positive"
    assert d.support == pytest.approx(2 / 3)


def test_three_way_split_escalates() -> None:
    d = Majority().decide([vote("a", "positive"), vote("b", "negative"), vote("c", "neutral")])
    assert not d.accepted


def test_abstention_is_not_a_vote() -> None:
    # two of three answered and agree: accepted
    assert Majority().decide([vote("a", "positive"), vote("b", None), vote("c", "positive")]).accepted
    # only one answered: one worker never decides alone for a team
    d = Majority().decide([vote("a", "positive"), vote("b", None), vote("c", None)])
    assert not d.accepted and "1 of 3" in d.reason


def test_single_worker_cascade_decides_alone() -> None:
    assert Majority().decide([vote("a", "neutral")]).accepted


def test_early_exit_view_two_votes_of_three() -> None:
    # the cascade's early exit asks the rule with two votes of a three-worker team
    assert Majority().decide([vote("a", "positive"), vote("b", "positive")], n_workers=3).accepted
    assert not Unanimous().decide([vote("a", "positive"), vote("b", "positive")], n_workers=3).accepted


def test_weighted_vote() -> None:
    votes = [vote("good", "positive", 0.9), vote("bad", "negative", 0.9)]
    d = WeightedVote({"good": 3.0, "bad": 1.0}, threshold=0.6).decide(votes)
    assert d.accepted and d.label == "positive"
    d = WeightedVote({"good": 1.0, "bad": 1.0}, threshold=0.6).decide(votes)
    assert not d.accepted


def test_make_policy_errors() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("plurality")
    with pytest.raises(ValueError, match="threshold"):
        make_policy("confident-majority", 1.5)
    assert make_policy("confident-majority", 0.7).describe() == "confident-majority@0.7"
