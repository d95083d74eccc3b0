"""The transductive certificate and rank cuts: exact hypergeometric bounds, the fixed-sequence
walk over cuts, the keyed tie-break, and the guarantee itself measured over many draws."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import hypergeom

from speculabel.certify.finite import (
    allowed_misses,
    certify_cut,
    default_cuts,
    hypergeom_p,
    hypergeom_upper,
)
from speculabel.certify.rank import apply_cut, make_cut, positions, rank_order, tie_hash


def test_allowed_misses_is_the_floor_of_the_slack() -> None:
    assert allowed_misses(0.9, 1000) == 100
    assert allowed_misses(0.85, 1000) == 150
    assert allowed_misses(0.9, 999) == 99
    with pytest.raises(ValueError):
        allowed_misses(1.0, 10)


def test_hypergeom_upper_is_the_exact_inversion() -> None:
    d, n, pop, delta = 3, 60, 800, 0.1
    u = hypergeom_upper(d, n, pop, delta)
    assert hypergeom.cdf(d, pop, u, n) > delta >= hypergeom.cdf(d, pop, u + 1, n)
    # sampling the whole population leaves no doubt
    assert hypergeom_upper(4, 50, 50, 0.1) == 4
    # the finite-population bound is tighter than the binomial (Clopper-Pearson) one
    from speculabel.certify.binomial import upper_bound

    assert u / pop < upper_bound(d, n, delta)


def test_hypergeom_p_edges() -> None:
    # the null "at least 11 of 10 disagree" is impossible: p = 0; nothing drawn: p = 1
    assert float(hypergeom_p(0, 5, 10, 11)) == 0.0
    assert float(hypergeom_p(0, 0, 100, 11)) == 1.0


def test_certify_cut_walks_strict_to_loose_and_stops_at_the_first_failure() -> None:
    n = 1000
    cuts = [100, 200, 300, 400, 500]
    # 100 sampled items spread evenly; misses only beyond position 350
    pos = np.arange(5, 1000, 10)
    miss = pos > 350
    c = certify_cut(n, pos, miss, 0.9, 0.1, cuts=cuts)
    assert c.cut in (300, 400) and c.stopped_at == c.cut + 100
    assert c.misses_kept == int(miss[pos < c.cut].sum())
    assert c.labelled_kept == int((pos < c.cut).sum())
    assert "0.9" in c.statement() and "hypergeometric" in c.statement()


def test_a_cut_within_the_slack_needs_no_label() -> None:
    c = certify_cut(1000, [], [], 0.8, 0.1)
    assert c.cut == 200 and c.judge_share == pytest.approx(0.8)
    assert 200 in default_cuts(1000, 0.8)


def test_earlier_labels_leave_the_population_and_sampling_is_without_replacement() -> None:
    with pytest.raises(ValueError, match="without replacement"):
        certify_cut(100, [1, 2], [False, False], 0.9, 0.1, earlier_pos=[2])
    with pytest.raises(ValueError, match="positions"):
        certify_cut(100, [100], [False], 0.9, 0.1)
    pos, ok = np.arange(0, 400, 20), np.zeros(20, bool)
    a = certify_cut(1000, pos, ok, 0.95, 0.05, cuts=[400])
    b = certify_cut(1000, pos, ok, 0.95, 0.05, cuts=[400], earlier_pos=np.arange(1, 400, 4))
    assert a.cut == 0 and b.cut == 400  # 100 earlier labels: a smaller population to bound
    assert b.labelled_kept == 120


def test_guarantee_holds_over_draws_at_a_tight_boundary() -> None:
    """Violation rate of the whole-data agreement over 400 draws stays below delta."""
    rng = np.random.default_rng(3)
    n, target, delta = 600, 0.85, 0.2
    miss = rng.random(n) < np.linspace(0.02, 0.45, n)
    b = allowed_misses(target, n)
    violations = certified = 0
    for seed in range(400):
        s = np.random.default_rng(seed).permutation(n)[:80]
        c = certify_cut(n, s, miss[s], target, delta)
        certified += c.cut > 0
        violations += int(miss[:c.cut].sum()) > b
    assert certified == 400
    assert violations / 400 <= delta


def test_rank_order_breaks_ties_by_keyed_hash_and_ignores_labels() -> None:
    ids = [f"item-{i}" for i in range(50)]
    scores = [0.9] * 20 + [0.5] * 30
    o1, o2 = rank_order(scores, ids, "k1"), rank_order(scores, ids, "k1")
    assert (o1 == o2).all()
    assert set(o1[:20]) == set(range(20))  # scores first
    within = [tie_hash(ids[i], "k1") for i in o1[:20]]
    assert within == sorted(within)
    assert not (rank_order(scores, ids, "k2") == o1).all()  # another key, another tie order
    assert (positions(o1)[o1] == np.arange(50)).all()
    with pytest.raises(ValueError, match="unique"):
        rank_order([0.1, 0.2], ["a", "a"], "k")


def test_a_cut_applies_to_the_same_items_at_run_time() -> None:
    rng = np.random.default_rng(0)
    ids = [f"x{i}" for i in range(200)]
    scores = np.round(rng.random(200), 1)  # many ties
    order = rank_order(scores, ids, "key")
    for kept in (0, 1, 57, 200):
        cut = make_cut(scores, ids, "key", kept)
        mask = apply_cut(cut, scores, ids)
        assert mask.sum() == kept
        assert set(np.flatnonzero(mask)) == set(order[:kept].tolist())
    # an item judged on its own gets the same answer
    cut = make_cut(scores, ids, "key", 57)
    assert cut.keeps(float(scores[order[56]]), ids[order[56]])
    assert not cut.keeps(float(scores[order[57]]), ids[order[57]])
    assert cut.to_json()["key"] == "key"
