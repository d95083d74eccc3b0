"""The exact binomial bound, the threshold search, per-model calibration and the config file."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.calibration.choose import choose_model_calibration
from speculabel.calibration.offsets import contextual_offsets
from speculabel.calibration.temperature import apply_calibration, fit_temperature
from speculabel.calibration.weights import reliability_weights
from speculabel.cascade.config import load_config, save_config
from speculabel.certify.binomial import min_items, p_value, upper_bound
from speculabel.certify.plan import plan_cascade
from speculabel.certify.scores import CalibrationData, calibrated_votes, evaluate_rule, policy_scores
from speculabel.certify.threshold import calibrate_threshold, max_feasible_target
from speculabel.policy import make_policy
from speculabel.records import Item, Vote

# --------------------------------------------------------------------------- the binomial bound


def _cdf_brute(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(("k", "n", "p"), [(0, 1, 0.3), (3, 10, 0.2), (7, 40, 0.1), (20, 50, 0.5)])
def test_p_value_is_the_binomial_cdf(k: int, n: int, p: float) -> None:
    assert p_value(k, n, p) == pytest.approx(_cdf_brute(k, n, p), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("k", "n", "delta"), [(0, 10, 0.1), (3, 50, 0.1), (10, 1000, 0.05),
                                               (40, 100, 0.2)])
def test_upper_bound_is_the_clopper_pearson_quantile(
    k: int, n: int, delta: float
) -> None:
    ub = upper_bound(k, n, delta)
    assert k / n <= ub <= 1
    # by definition P(Bin(n, ub) <= k) = delta
    assert _cdf_brute(k, n, ub) == pytest.approx(delta, rel=1e-6)
    if k == 0:
        assert ub == pytest.approx(1 - delta ** (1 / n))


def test_upper_bound_edge_cases() -> None:
    assert upper_bound(0, 0, 0.1) == 1.0
    assert upper_bound(5, 5, 0.1) == 1.0
    with pytest.raises(ValueError):
        upper_bound(1, 5, 0.0)


def test_min_items_is_where_a_clean_sample_first_passes() -> None:
    n = min_items(0.95, 0.1)
    assert n == 45
    assert p_value(0, n, 0.05) <= 0.1 < p_value(0, n - 1, 0.05)


# --------------------------------------------------------------------------- the threshold search


def _two_bands(n_hi: int, n_lo: int, lo_agree: int) -> tuple[np.ndarray, np.ndarray]:
    """n_hi items at score 0.9, all agreeing; n_lo at 0.6, of which lo_agree agree."""
    scores = np.r_[np.full(n_hi, 0.9), np.full(n_lo, 0.6)]
    agree = np.r_[np.ones(n_hi, bool), np.arange(n_lo) < lo_agree]
    return scores, agree


def test_threshold_search_known_answer() -> None:
    scores, agree = _two_bands(100, 100, 50)
    res = calibrate_threshold(scores, agree, target=0.9, delta=0.1)
    # the loose band (50% agreement) can never be admitted; the strict band passes easily
    assert res.feasible
    assert res.threshold == pytest.approx(0.605)  # the loosest grid point above 0.6
    assert res.coverage == pytest.approx(0.5)
    assert res.judge_call_rate == pytest.approx(0.5)
    assert res.agreement == 1.0
    assert res.bound == pytest.approx(0.1 ** (1 / 100))  # 1 - Clopper-Pearson(0, 100)
    assert res.shortfall == 0.0
    assert "judge-call rate 50.0%" in res.message()


def test_loose_threshold_when_everything_agrees() -> None:
    scores, agree = _two_bands(100, 100, 100)
    res = calibrate_threshold(scores, agree, target=0.9, delta=0.1)
    assert res.threshold == 0.0 and res.coverage == 1.0


def test_never_accepted_items_count_against_coverage() -> None:
    scores = np.r_[np.full(100, 0.9), np.full(100, -np.inf), np.full(50, np.nan)]
    agree = np.r_[np.ones(100, bool), np.zeros(150, bool)]
    res = calibrate_threshold(scores, agree, target=0.9, delta=0.1)
    assert res.threshold == 0.0
    assert res.coverage == pytest.approx(100 / 250)


def test_no_threshold_qualifies_says_by_how_much() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random(400)
    agree = rng.random(400) < 0.7  # 70% agreement at every confidence level
    res = calibrate_threshold(scores, agree, target=0.95, delta=0.1)
    assert not res.feasible
    assert res.threshold is None and res.coverage == 0.0 and res.agreement is None
    assert 0.0 < res.best_bound < 0.95
    assert res.shortfall == pytest.approx(0.95 - res.best_bound)
    assert res.shortfall > 0.1
    msg = res.message()
    assert "no threshold meets the target" in msg and "short by" in msg
    best = max_feasible_target(scores, agree, 0.1)
    assert best is not None and best < 0.95
    assert calibrate_threshold(scores, agree, best, 0.1).feasible
    assert not calibrate_threshold(scores, agree, best + 0.01, 0.1).feasible


def test_too_few_confident_items_is_infeasible() -> None:
    # 30 perfect items cannot certify 95% at delta 0.1 (45 needed), however clean they are
    scores = np.r_[np.full(30, 0.99), np.full(200, 0.3)]
    agree = np.r_[np.ones(30, bool), np.zeros(200, bool)]
    res = calibrate_threshold(scores, agree, target=0.95, delta=0.1)
    assert not res.feasible
    # ... while 45 are enough
    scores = np.r_[np.full(45, 0.99), np.full(200, 0.3)]
    agree = np.r_[np.ones(45, bool), np.zeros(200, bool)]
    res = calibrate_threshold(scores, agree, target=0.95, delta=0.1)
    assert res.feasible and res.threshold == pytest.approx(0.305)


def test_sequence_starts_at_the_first_testable_threshold() -> None:
    # a handful of items at the very top do not stop the sequence before it starts
    scores = np.r_[np.full(5, 1.0), np.full(200, 0.8), np.full(100, 0.2)]
    agree = np.r_[np.zeros(5, bool), np.ones(200, bool), np.zeros(100, bool)]
    res = calibrate_threshold(scores, agree, target=0.9, delta=0.1)
    assert res.feasible and res.threshold == pytest.approx(0.205)


def test_fixed_sequence_stops_at_the_first_failure_bonferroni_does_not() -> None:
    scores = np.r_[np.full(100, 0.9), np.full(50, 0.7), np.full(2000, 0.5)]
    agree = np.r_[np.ones(100, bool), np.zeros(50, bool), np.ones(2000, bool)]
    fst = calibrate_threshold(scores, agree, target=0.9, delta=0.1)
    assert fst.threshold == pytest.approx(0.705)  # stopped at the bad band
    bonf = calibrate_threshold(scores, agree, target=0.9, delta=0.1, method="bonferroni")
    assert bonf.threshold == 0.0  # 50 / 2150 disagree overall: certified with Bonferroni


def test_fixed_sequence_is_at_least_as_loose_as_bonferroni_on_monotone_data() -> None:
    rng = np.random.default_rng(3)
    s = rng.random(1500)
    agree = rng.random(1500) < 0.5 + 0.5 * s
    fst = calibrate_threshold(s, agree, 0.9, 0.1)
    bonf = calibrate_threshold(s, agree, 0.9, 0.1, method="bonferroni")
    assert fst.feasible and bonf.feasible
    assert fst.coverage >= bonf.coverage


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        calibrate_threshold([0.5], [True], target=1.0, delta=0.1)
    with pytest.raises(ValueError):
        calibrate_threshold([0.5], [True, False], target=0.9, delta=0.1)
    with pytest.raises(ValueError):
        calibrate_threshold([0.5], [True], target=0.9, delta=0.1, method="magic")


# --------------------------------------------------------------------------- the guarantee


def _true_agreement(t: float) -> float:
    """Population agreement among items with score >= t for s ~ U(0,1), q(s) = 0.55 + 0.45 s."""
    return 0.55 + 0.45 * (1 + t) / 2


@pytest.mark.parametrize("method", ["fixed-sequence", "fallback"])
def test_guarantee_holds_empirically_on_synthetic_data(method: str) -> None:
    target, delta, trials, n = 0.9, 0.1, 150, 1000
    rng = np.random.default_rng(7)
    violations = feasible = 0
    for _ in range(trials):
        s = rng.random(n)
        agree = rng.random(n) < 0.55 + 0.45 * s
        res = calibrate_threshold(s, agree, target, delta, method=method)
        if res.feasible:
            feasible += 1
            assert res.threshold is not None
            violations += _true_agreement(res.threshold) < target
    assert feasible > trials * 0.6  # the check is not vacuous
    # at most delta, up to the sampling error of 150 trials (3 standard errors)
    assert violations / trials <= delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    # the true agreement at the chosen thresholds is not wildly conservative either:
    # the oracle threshold is 0.6 (agreement exactly 0.9)


def test_guarantee_on_held_out_samples() -> None:
    """Calibrate on one part, measure on the rest, as guarantee_check does on real data."""
    target, delta = 0.85, 0.1
    rng = np.random.default_rng(11)
    s = rng.random(20000)
    agree = rng.random(20000) < 0.5 + 0.5 * s**2
    bad = 0
    for _ in range(60):
        idx = rng.permutation(len(s))
        c, t = idx[:1000], idx[1000:]
        res = calibrate_threshold(s[c], agree[c], target, delta)
        if res.feasible:
            assert res.threshold is not None
            acc = s[t] >= res.threshold
            bad += agree[t][acc].mean() < target
    assert bad / 60 <= delta + 0.12


# --------------------------------------------------------------------------- votes and policies


def _v(model: str, probs: dict[str, float]) -> Vote:
    return Vote.from_probs(model, probs)


def test_policy_scores_follow_the_rules() -> None:
    a = _v("a", {"neg": 0.9, "pos": 0.1})
    b = _v("b", {"neg": 0.7, "pos": 0.3})
    c = _v("c", {"neg": 0.2, "pos": 0.8})
    rows = [[a, b], [a, c], [a, Vote.abstain("b", "down")]]
    scores, labels = policy_scores(make_policy("confident-majority", 0.0), rows)
    assert scores[0] == pytest.approx(0.8) and labels[0] == "neg"
    assert scores[1] == -np.inf  # a tie is never accepted
    assert scores[2] == -np.inf  # one answer of two workers
    w_scores, w_labels = policy_scores(make_policy("weighted", 0.0, weights={"a": 3, "c": 1}),
                                           rows[:2])
    assert w_labels[1] == "neg"
    assert w_scores[1] == pytest.approx((3 * 0.9 + 1 * 0.2) / 4)
    # accepted at threshold t exactly when score >= t, as the policy itself decides
    for t in (0.5, 0.8, 0.81):
        pol = make_policy("confident-majority", t)
        assert pol.decide(rows[0], 2).accepted == (scores[0] >= t)


def test_contextual_offsets_and_their_effect() -> None:
    labels = ["negative", "neutral", "positive"]
    bias = np.log([0.1, 0.2, 0.7])  # a model that leans positive whatever it reads

    def score(items: Sequence[Item]) -> list[Vote]:
        return [_v("m", dict(zip(labels, np.exp(bias), strict=True))) for _ in items]

    off = contextual_offsets(score, ["text"])
    assert set(off) == set(labels)
    assert sum(off.values()) == pytest.approx(0.0, abs=1e-5)
    assert off["positive"] > off["neutral"] > off["negative"]
    # an item the model rates 0.25/0.25/0.5 (mildly positive, less than its bias) flips
    v = _v("m", {"negative": 0.25, "neutral": 0.25, "positive": 0.5})
    (cv,) = apply_calibration([v], off)
    assert v.label == "positive" and cv.label == "negative"
    assert sum(cv.probs.values()) == pytest.approx(1.0)


def test_contextual_offsets_need_an_answer() -> None:
    with pytest.raises(ValueError):
        contextual_offsets(lambda items: [Vote.abstain("m", "empty") for _ in items], ["t"])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n: int, temperature: float, seed: int = 0) -> tuple[list[Vote], list[str]]:
    """Votes whose logits are the true ones times ``temperature``, and labels drawn from truth."""
    labels = ["a", "b", "c"]
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    truth = _softmax(z)
    y = [labels[rng.choice(3, p=p)] for p in truth]
    shown = _softmax(z * temperature)
    return [_v("m", dict(zip(labels, p, strict=True))) for p in shown], y


def test_fit_temperature_recovers_overconfidence() -> None:
    votes, y = _overconfident(3000, 3.0)
    t = fit_temperature(votes, y, ["a", "b", "c"])
    assert t == pytest.approx(3.0, rel=0.15)
    votes, y = _overconfident(3000, 1.0, seed=1)
    assert fit_temperature(votes, y, ["a", "b", "c"]) == pytest.approx(1.0, rel=0.15)


def test_choose_model_calibration_keeps_what_helps() -> None:
    labels = ["a", "b", "c"]
    votes, y = _overconfident(1500, 3.0)
    mc = choose_model_calibration("m", votes, y, labels)
    assert mc.report["kept"]["temperature"] and mc.temperature > 2
    assert mc.to_config() == {"temperature": mc.temperature}
    # offsets that push every vote towards "a" lower accuracy: dropped
    harmful = {"a": -3.0, "b": 1.5, "c": 1.5}
    mc = choose_model_calibration("m", votes, y, labels, harmful)
    assert mc.offsets is None and not mc.report["kept"]["offsets"]
    # a model biased towards "c" is fixed by offsets measuring that bias: kept
    bias = np.array([0.0, 0.0, 2.0])
    rng = np.random.default_rng(5)
    z = rng.normal(0, 1.5, (1500, 3))
    y2 = [labels[int(i)] for i in z.argmax(axis=1)]
    biased = [_v("m", dict(zip(labels, p, strict=True))) for p in _softmax(z + bias)]
    helpful = {"a": -2 / 3, "b": -2 / 3, "c": 4 / 3}
    mc = choose_model_calibration("m", biased, y2, labels, helpful)
    assert mc.offsets == helpful
    assert mc.report["contextual"]["accuracy"] > mc.report["raw"]["accuracy"]


def test_reliability_weights() -> None:
    ref = ["a"] * 50 + ["b"] * 50
    good = [_v("good", {"a": 0.9, "b": 0.1}) if r == "a" else _v("good", {"a": 0.1, "b": 0.9})
            for r in ref]
    coin = [_v("coin", {"a": 0.6, "b": 0.4})] * 100  # always "a": 50% on two labels = chance
    worse = [_v("worse", {"a": 0.1, "b": 0.9}) if r == "a" else _v("worse", {"a": 0.9, "b": 0.1})
             for r in ref]
    w = reliability_weights({"good": good, "coin": coin, "worse": worse}, ref, 2)
    assert w["good"] > 3
    assert w["coin"] == pytest.approx(0.0, abs=1e-9)
    assert w["worse"] == 0.0


# --------------------------------------------------------------------------- plan and config


def _synthetic_cascade(n: int, seed: int) -> CalibrationData:
    """Two workers that are right more often when confident; the reference is known."""
    labels = ["neg", "pos"]
    rng = np.random.default_rng(seed)
    rows: list[list[Vote]] = []
    ref: list[str | None] = []
    for _ in range(n):
        truth = labels[rng.integers(2)]
        votes = []
        for name, skill in (("w1", 0.9), ("w2", 0.7)):
            conf = 0.5 + 0.5 * rng.random()
            right = rng.random() < min(1.0, skill * conf + 0.15)
            lab = truth if right else labels[1 - labels.index(truth)]
            other = labels[1 - labels.index(lab)]
            votes.append(_v(name, {lab: conf, other: 1 - conf}))
        rows.append(votes)
        ref.append(truth)
    return CalibrationData(labels, ["w1", "w2"], rows, ref)


@pytest.mark.parametrize("policy", ["confident-majority", "weighted", "auto"])
def test_plan_write_and_read_back(policy: str, tmp_path: Path) -> None:
    data = _synthetic_cascade(1500, 0)
    plan = plan_cascade(data, 0.9, 0.1, policy=policy, model_calibration="auto")
    assert plan.result.feasible, plan.result.message()
    assert plan.n_fit == 450 and plan.n_test == 1050
    if plan.policy == "weighted":
        assert plan.weights["w1"] > plan.weights["w2"] > 0
    cfg = plan.to_config(task="sentiment", workers=data.workers, judge="big")
    out = save_config(cfg, tmp_path / "cascade.toml", comment="calibrated\nin a test")
    text = out.read_text()
    assert text.startswith("# calibrated\n# in a test\n")
    raw = tomllib.loads(text)
    assert raw["threshold"] == plan.threshold and raw["policy"] == plan.policy
    assert raw["workers"] == ["w1", "w2"] and raw["judge"] == "big"
    assert raw["early_exit"] is False
    cfg = load_config(out)  # what classify reads
    assert cfg.threshold == plan.threshold
    assert {k: v.model_dump(exclude_defaults=True) for k, v in cfg.calibration.items()} == \
        plan.calibration_table()
    # the rule classify builds from the file decides exactly like the calibration said
    rule = make_policy(cfg.policy, cfg.threshold, weights=cfg.weights)
    votes = calibrated_votes(data, plan.calibration)
    decided = sum(rule.decide(v, 2).accepted for v in votes)
    ev = evaluate_rule(data, plan.policy, plan.threshold, weights=plan.weights,
                           calibration=plan.calibration)
    assert decided == ev["decided"]


def test_plan_infeasible_and_fresh_data_meets_target() -> None:
    data = _synthetic_cascade(1500, 1)
    plan = plan_cascade(data, 0.999, 0.1)
    assert not plan.result.feasible and plan.threshold is None
    assert plan.result.shortfall > 0
    plan = plan_cascade(data, 0.9, 0.1)
    fresh = evaluate_rule(_synthetic_cascade(5000, 2), plan.policy, plan.threshold)
    assert fresh["agreement"] >= 0.9 - 0.01
    assert fresh["coverage"] == pytest.approx(plan.result.coverage, abs=0.05)


def test_config_rejects_bad_settings() -> None:
    from speculabel.cascade.config import ConfigError, make_config

    with pytest.raises(ConfigError, match="one to three workers"):
        make_config({"task": "sentiment", "workers": ["a", "b", "c", "d"], "judge": "j",
                     "policy": "confident-majority", "threshold": 0.5})


def test_fallback_recovers_from_a_noisy_strict_end() -> None:
    # agreement is flat at 95% above 0.5 (target 0.9): the first small tests of a fixed sequence
    # often fail by chance; the fallback's later starts (4x and 16x more items) still pass
    rng = np.random.default_rng(2)
    s = rng.random(2000)
    agree = np.where(s > 0.5, rng.random(2000) < 0.95, rng.random(2000) < 0.5)
    agree[np.argsort(-s)[:10]] = False  # a bad top: the strict end is hopeless
    fst = calibrate_threshold(s, agree, 0.9, 0.1)
    fb = calibrate_threshold(s, agree, 0.9, 0.1, method="fallback")
    assert not fst.feasible
    assert fb.feasible and fb.coverage > 0.3
    assert fb.bound is not None and fb.bound >= 0.9


@pytest.mark.parametrize("method", ["fixed-sequence", "fallback"])
def test_fallback_and_fixed_sequence_agree_on_clean_data(method: str) -> None:
    scores, agree = _two_bands(300, 300, 150)
    res = calibrate_threshold(scores, agree, 0.9, 0.1, method=method)
    assert res.threshold == pytest.approx(0.605) and res.coverage == pytest.approx(0.5)


# --------------------------------------------------------------------------- the command


def _labelled_csv(path: Path) -> Path:
    rows = ["id,text,label"]
    for i in range(150):
        rows.append(f"p{i},I love this great wonderful thing number {i},positive")
        rows.append(f"n{i},I hate this awful terrible thing number {i},negative")
    for i in range(60):
        rows.append(f"u{i},The table is in room {i},neutral")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_calibrate_command_writes_a_config_classify_reads(tmp_path: Path) -> None:
    needs.module("vaderSentiment", needs.BENCH)
    from typer.testing import CliRunner

    from speculabel.cli import app

    csv = _labelled_csv(tmp_path / "cal.csv")
    out = tmp_path / "cascade.toml"
    args = ["calibrate", str(csv), "--workers", "vader", "--judge", "qwen2.5-1.5b",
            "--gold-column", "label", "--reference", "gold", "--scope", "workers",
            "--id-column", "id", "--target", "0.9", "--delta", "0.1",
            "--votes", str(tmp_path / "votes.sqlite"), "-o", str(out),
            "--report", str(tmp_path / "evidence.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "expected coverage" in res.output
    cfg = load_config(out)
    assert cfg.workers == ["vader"] and cfg.judge == "qwen2.5-1.5b"
    assert cfg.policy == "confident-majority" and cfg.threshold is not None
    assert out.read_text().startswith("# written by: speculabel calibrate")
    assert (tmp_path / "evidence.json").exists()

    # a target nobody can certify: nothing written, and the gap is reported
    out2 = tmp_path / "none.toml"
    res = CliRunner().invoke(app, [*args[:-4], "-o", str(out2), "--target", "0.9999"])
    assert res.exit_code == 1, res.output
    assert "short by" in res.output and not out2.exists()


def test_calibrate_command_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from speculabel.cli import app

    res = CliRunner().invoke(app, ["calibrate", str(tmp_path / "missing.csv"), "--gold-column",
                                   "label", "--workers", "vader"])
    assert res.exit_code == 2 and "not found" in res.output


def test_infeasible_because_the_sequence_stopped_says_so() -> None:
    scores = np.r_[np.full(100, 0.9), np.full(2000, 0.5)]
    agree = np.r_[np.arange(100) < 70, np.ones(2000, bool)]  # a bad strict end, a good rest
    res = calibrate_threshold(scores, agree, 0.9, 0.1)
    assert not res.feasible and res.stopped_at == 0.9
    assert res.best_bound > 0.9 and res.shortfall == 0.0
    assert "--method fallback" in res.message()
    assert calibrate_threshold(scores, agree, 0.9, 0.1, method="fallback").feasible


# --------------------------------------------------------------------------- the three scopes


def _population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, worker-agrees-with-reference, judge-right: agreement rises with the score."""
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    agree = rng.random(n) < 0.55 + 0.43 * s
    judge_right = rng.random(n) < 0.8
    return s, agree, judge_right


def test_dataset_scope_counts_judge_decided_items_as_agreeing() -> None:
    s, agree, _ = _population(2000, 0)
    workers = calibrate_threshold(s, agree, 0.9, 0.1, scope="workers")
    dataset = calibrate_threshold(s, agree, 0.9, 0.1, scope="dataset")
    assert workers.feasible and dataset.feasible
    # a whole-data target is far looser than the same target on the workers' share
    assert dataset.coverage > workers.coverage + 0.2
    assert dataset.estimate is not None and dataset.estimate >= 0.9
    assert dataset.bound is not None and dataset.bound >= 0.9
    # at the certified threshold the workers' own share agrees less than 0.9
    assert dataset.agreement is not None and dataset.agreement < 0.9
    assert "over the whole data set" in dataset.message()


def test_non_inferiority_lets_a_worker_better_than_the_judge_decide_everything() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    s = rng.random(n)
    worker_right = rng.random(n) < 0.9
    judge_right = rng.random(n) < 0.8
    res = calibrate_threshold(s, worker_right, 0.02, 0.1, scope="non-inferior",
                              judge_right=judge_right)
    assert res.feasible and res.threshold == 0.0 and res.coverage == 1.0
    assert res.estimate is not None and res.estimate < 0  # the cascade beats the judge
    assert res.bound is not None and res.bound <= 0.02
    worse = calibrate_threshold(s, rng.random(n) < 0.6, 0.02, 0.1, scope="non-inferior",
                                judge_right=judge_right)
    assert not worse.feasible or worse.coverage < 0.2


def test_too_few_items_says_how_many_are_needed() -> None:
    res = calibrate_threshold(np.ones(10), np.ones(10, dtype=bool), 0.02, 0.1,
                              scope="non-inferior", judge_right=np.ones(10, dtype=bool))
    assert not res.feasible and res.needed == 149
    assert "needs at least 149 calibration items" in res.message()
    res = calibrate_threshold(np.ones(10), np.ones(10, dtype=bool), 0.9, 0.1, scope="dataset")
    assert not res.feasible and "needs at least 22 calibration items" in res.message()


@pytest.mark.parametrize(("scope", "target"), [("workers", 0.85), ("dataset", 0.9),
                                               ("non-inferior", 0.02)])
def test_the_guarantee_holds_over_random_calibration_draws(scope: str, target: float) -> None:
    """P(the certified quantity misses the target on the population) <= delta, measured."""
    s, agree, judge_right = _population(20000, 2)
    worker_right = agree  # in the non-inferiority case, agree means "right on gold"
    rng = np.random.default_rng(3)
    delta, draws, violations = 0.1, 150, 0
    for _ in range(draws):
        idx = rng.choice(len(s), 400, replace=False)
        res = calibrate_threshold(s[idx], agree[idx], target, delta, scope=scope,  # type: ignore[arg-type]
                                  judge_right=judge_right[idx])
        if not res.feasible or res.threshold is None:
            continue
        acc = s >= res.threshold
        if scope == "workers":
            violations += bool(acc.any()) and agree[acc].mean() < target
        elif scope == "dataset":
            violations += 1 - (acc & ~agree).mean() < target
        else:
            loss = (acc & ~worker_right & judge_right).mean() - (acc & worker_right & ~judge_right).mean()
            violations += loss > target
    assert violations / draws <= delta
