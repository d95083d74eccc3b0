"""Label only what the certificate needs: the stopping rules, the size planner, the betting test,
and the guarantee of each rule measured over many draws (a fake labeller: pure logic)."""

from __future__ import annotations

import numpy as np
import pytest

from speculabel.certify.betting import betting_cut, log_capital
from speculabel.certify.budget import miss_curve, plan_sample_size, size_menu
from speculabel.certify.conditional import conditional_levels, conditional_pass, critical_values
from speculabel.certify.finite import allowed_misses
from speculabel.certify.sequential import sequential_certify


def _population(n: int, seed: int = 1) -> tuple[list[str], list[str], dict[str, str], np.ndarray]:
    """Items in confidence order, workers always say "a"; the reference disagrees more often
    further down the order."""
    rng = np.random.default_rng(seed)
    miss = rng.random(n) < np.linspace(0.0, 0.5, n) ** 1.5
    ids = [f"i{k}" for k in range(n)]
    ref = dict(zip(ids, np.where(miss, "b", "a").tolist(), strict=True))
    return ids, ["a"] * n, ref, miss


class CountingLabeller:
    def __init__(self, ref: dict[str, str]) -> None:
        self.ref, self.asked, self.calls = ref, [], 0

    def __call__(self, ids: list[str]) -> list[str]:
        self.calls += 1
        self.asked.extend(ids)
        return [self.ref[i] for i in ids]


@pytest.mark.parametrize("rule", ["reuse", "pilot", "betting", "looks", "fixed"])
def test_each_rule_buys_without_replacement_in_batches(rule: str) -> None:
    ids, workers, ref, _ = _population(600)
    lab = CountingLabeller(ref)
    res = sequential_certify(ids, workers, lab, 0.9, 0.1, rule=rule, seed=0, batch=10, size=80)
    assert len(lab.asked) == len(set(lab.asked)) == len(res.labels)
    assert res.certificate.cut > 0
    assert res.judge_calls == 600 - res.certificate.cut + res.certificate.labelled_kept
    if rule in ("reuse", "pilot", "betting"):
        assert lab.calls > 1 and max(1, len(lab.asked) // lab.calls) <= 12
    assert res.to_json()["rule"] == rule


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rule"):
        sequential_certify(["a"], ["x"], lambda xs: ["x"], 0.9, 0.1, rule="guess")
    with pytest.raises(ValueError, match="worker labels"):
        sequential_certify(["a", "b"], ["x"], lambda xs: ["x"], 0.9, 0.1)


def test_a_labeller_that_returns_too_few_labels_is_an_error() -> None:
    with pytest.raises(ValueError, match="labeller"):
        sequential_certify([f"i{k}" for k in range(50)], ["a"] * 50, lambda xs: [], 0.9, 0.1,
                           rule="fixed", size=10)


def test_a_missing_reference_label_counts_against_the_workers() -> None:
    ids = [f"i{k}" for k in range(300)]
    res = sequential_certify(ids, ["a"] * 300, lambda xs: [None] * len(xs), 0.9, 0.1,
                             rule="fixed", size=100)
    assert res.certificate.cut == allowed_misses(0.9, 300)  # only the free cut


def test_betting_capital_rejects_a_clean_population_and_not_a_dirty_one() -> None:
    clean = np.zeros(80, dtype=bool)
    assert log_capital(clean, 500, 101) > np.log(10)  # 0 of 80 when >= 101 of 500 expected
    dirty = np.random.default_rng(0).random(80) < 0.25
    assert log_capital(dirty, 500, 101) < np.log(10)
    assert log_capital(clean, 50, 101) == float("inf")  # the null is impossible
    # a cut whose capital never crosses stops the sequence
    pos = np.random.default_rng(1).permutation(np.arange(0, 1000, 12))  # draw order
    miss = pos > 500
    j = betting_cut(pos, miss, [200, 400, 600, 800], 101, 0.1)
    assert j in (0, 1)


def test_size_menu_and_plan() -> None:
    menu = size_menu(1000, 40)
    assert menu[0] == 0 and menu == sorted(set(menu)) and menu[-1] <= 480
    _, _, _, miss = _population(1000)
    pilot = np.random.default_rng(0).permutation(1000)[:40]
    plan = plan_sample_size(1000, pilot, miss[pilot], 0.9, 0.1, [100, 300, 500, 700, 900],
                            menu=menu, reps=10)
    assert plan.size in menu and plan.costs[plan.size] == min(plan.costs.values())
    with pytest.raises(ValueError):
        plan_sample_size(1000, [], [], 0.9, 0.1, [100])


@pytest.mark.parametrize(("rule", "draws"), [("reuse", 60), ("pilot", 60), ("betting", 30),
                                             ("looks", 100)])
def test_guarantee_holds_at_the_stopping_time(rule: str, draws: int) -> None:
    """Over many draws the kept items' disagreements exceed the allowance (the certified
    quantity) at most delta of the time (plus room for the noise of a few dozen draws)."""
    n, target, delta = 500, 0.88, 0.1
    ids, workers, ref, miss = _population(n, seed=5)
    b = allowed_misses(target, n)
    misses = 0
    for seed in range(draws):
        res = sequential_certify(ids, workers, lambda xs: [ref[i] for i in xs], target, delta,
                                 rule=rule, seed=seed)
        misses += int(miss[:res.certificate.cut].sum()) > b
    assert misses / draws <= delta + 0.05


def test_critical_values_are_the_exact_test_boundary() -> None:
    from scipy.stats import hypergeom

    crit = critical_values(400, 41, np.array([0, 20, 60, 100]), 0.1)
    for n, c in zip([0, 20, 60, 100], crit, strict=True):
        if c >= 0:
            assert hypergeom.cdf(c, 400, 41, n) <= 0.1
        assert hypergeom.cdf(c + 1, 400, 41, n) > 0.1


def test_conditional_levels_average_to_the_planned_level_under_the_null() -> None:
    """Without a pilot the level is the planned design's exact size (<= delta); with one, the
    levels averaged over pilots drawn under the least favourable null stay <= delta."""
    n, target, delta, n_plan = 300, 0.8, 0.1, 60
    bad = 61  # B + 1 for T = 0.8, N = 300
    cuts = [200]
    empty = conditional_levels(n, n_plan, [], [], cuts, target, delta)
    assert 0.0 < empty[0] <= delta
    miss = np.zeros(n, dtype=bool)
    miss[np.random.default_rng(0).choice(200, bad, replace=False)] = True  # D = B + 1
    levels = []
    for seed in range(300):
        pilot = np.random.default_rng(seed).permutation(n)[:24]
        levels.append(conditional_levels(n, n_plan, pilot, miss[pilot], cuts, target, delta)[0])
    assert np.mean(levels) <= delta + 0.01
    assert max(levels) > delta  # a lucky pilot buys a looser level


def test_conditional_pass_free_and_dead_cuts() -> None:
    cuts = np.array([50, 100, 200])
    levels = np.array([0.0, 0.5, 0.5])
    pilot_pos, pilot_miss = np.array([10, 20, 30]), np.array([True, True, True])
    # bad = 51: cut 50 is free whatever its level; 100 has no fresh evidence (p = 1 > 0.5)
    assert conditional_pass(levels, pilot_pos, pilot_miss, np.array([], dtype=np.int64),
                            np.array([], dtype=bool), cuts, 51) == 0
    # a pilot that already holds bad misses kills the cut
    assert conditional_pass(np.ones(3), pilot_pos, pilot_miss, np.array([5]), np.array([False]),
                            cuts, 3) == -1


def test_miss_curve_rises_with_rank() -> None:
    frac = np.linspace(0, 1, 200)
    miss = np.random.default_rng(0).random(200) < 0.05 + 0.4 * frac
    theta, cov = miss_curve(frac, miss)
    assert theta[1] > 0 and cov.shape == (2, 2) and np.all(np.diag(cov) > 0)
    theta0, _ = miss_curve(frac, np.zeros(200, dtype=bool))  # no miss at all: finite
    assert np.isfinite(theta0).all()
