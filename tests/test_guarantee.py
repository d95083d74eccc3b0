"""Criterion 2 in the bench: certified thresholds per worker set, the split check, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speculabel.bench.analyse import analyse, attach_learner_stream, to_measure
from speculabel.bench.guarantee import calibrated_configs, rule_support
from speculabel.bench.simulate import VoteTable
from speculabel.certify.splits import split_check
from speculabel.records import Vote
from speculabel.report import write_report

LABELS = ["negative", "neutral", "positive"]


def _vote(model: str, label: str, conf: float, latency: float) -> Vote:
    rest = (1 - conf) / 2
    return Vote.from_probs(model, {x: (conf if x == label else rest) for x in LABELS},
                           latency_s=latency)


def world(n: int = 600, seed: int = 0) -> VoteTable:
    """A judge; 'good' and 'fair' workers whose confidence predicts agreement; a 'noise' one.

    good/fair agree with the judge with probability equal to their confidence, so high
    thresholds select items they get right: a target of 0.9 is reachable, 0.99 is not."""
    rng = np.random.default_rng(seed)
    judge = [str(rng.choice(LABELS)) for _ in range(n)]
    votes: dict[str, list[Vote]] = {"judge": [_vote("judge", j, 0.9, 1.0) for j in judge]}
    for name, lat in (("good", 0.05), ("fair", 0.1)):
        vs = []
        for j in judge:
            conf = float(rng.uniform(0.4, 1.0))
            other = str(rng.choice([x for x in LABELS if x != j]))
            vs.append(_vote(name, j if rng.random() < conf else other, conf, lat))
        votes[name] = vs
    votes["noise"] = [_vote("noise", str(rng.choice(LABELS)), 0.5, 0.01) for _ in judge]
    return VoteTable(votes)


def test_rule_support_marks_items_without_a_majority() -> None:
    t = world(50)
    scores, agree = rule_support(t, ("good", "fair", "noise"), "judge")
    assert scores.shape == agree.shape == (50,)
    for i in range(50):
        labs = [t.votes[w][i].label for w in ("good", "fair", "noise")]
        has_majority = max(labs.count(x) for x in set(labs)) >= 2
        assert np.isfinite(scores[i]) == has_majority
        if has_majority:
            major = max(set(labs), key=labs.count)
            assert agree[i] == (major == t.votes["judge"][i].label)


def test_calibrated_configs_feasible_and_infeasible() -> None:
    t = world()
    res = calibrated_configs(t, "judge", [("good", "fair"), ("noise", "good")],
                             targets=(0.9, 0.999), delta=0.1, splits=60, seed=1,
                             methods=("fixed-sequence", "fallback"))
    assert len(res["rows"]) == 2 * 2 * 2
    rows = {(tuple(r["workers"]), r["target"]): r for r in res["rows"]
            if r["method"] == "fixed-sequence"}
    ok = rows[(("good", "fair"), 0.9)]
    assert ok["feasible"] and ok["threshold"] is not None and 0 < ok["coverage"] < 1
    assert ok["agreement_decided"] >= 0.9
    cfg = ok["config"]
    # the simulated cascade at that threshold sends exactly the uncovered share to the judge
    assert cfg["judge_call_rate"] == pytest.approx(1 - ok["coverage"])
    assert cfg["speedup"] > 1  # workers cost 0.15 s of a 1 s judge
    # nothing certifies 99.9 % agreement on 600 items with these workers
    no = rows[(("good", "fair"), 0.999)]
    assert not no["feasible"] and no["config"] is None and no["judge_call_rate"] == 1.0
    assert no["shortfall"] > 0 and "no threshold meets the target" in no["message"]
    best = res["best"]["fixed-sequence"]
    assert "0.999" not in best and best["0.9"]["workers"] == ["good", "fair"]
    assert res["best"]["fallback"]["0.9"]["workers"] == ["good", "fair"]
    # the guarantee on held-out halves
    sc = ok["split_check"]
    assert sc["splits"] == 60 and sc["calibration_items"] == 300 and sc["test_items"] == 300
    assert sc["feasible_share"] > 0.5  # fixed-sequence stops at its first failed test
    assert sc["population_violation_rate"] <= 0.1 and res["guarantee_held"]
    assert sc["violation_rate"] <= 0.2  # the held-out half adds its own noise
    assert sc["mean_test_agreement"] >= 0.9 - 0.02


def test_split_check_holds_when_scores_say_nothing() -> None:
    """Scores unrelated to agreement (85 % everywhere): target 0.9 can never be met, so the
    test must (almost) never certify a threshold; target 0.8 holds whenever one is certified."""
    rng = np.random.default_rng(3)
    scores = rng.random(2000)
    agree = rng.random(2000) < 0.85
    for method in ("fixed-sequence", "fallback"):
        hi = split_check(scores, agree, 0.9, 0.1, splits=80, cal_frac=0.5, seed=0,
                         method=method)
        assert hi["feasible_share"] <= 0.1 and hi["population_violation_rate"] <= 0.1
        lo = split_check(scores, agree, 0.8, 0.1, splits=80, cal_frac=0.5, seed=0,
                         method=method)
        assert lo["population_violation_rate"] <= 0.1


def test_analyse_adds_calibration_and_measures_the_calibrated_config(tmp_path: Path) -> None:
    t = world(400)
    a = analyse(t, "judge", labels=LABELS, thresholds=[0.5, 0.9], all_judges=False,
                calibration_targets=(0.8, 0.9), splits=50)
    cal = a["calibration"]
    assert cal["targets"] == [0.8, 0.9] and len(cal["rows"]) == 2 * 2 * (3 + 1)
    configs = to_measure(a)
    assert configs[: len(a["selected"])] == a["selected"]
    extra = [c for c in configs if "calibrated_target" in c]
    assert "0.9" in cal["best"]["fallback"]  # good + fair reach it
    keys = [c["key"] for c in configs]
    assert len(keys) == len(set(keys))
    want = {cal["best"]["fallback"]["0.9"]["config"]["key"]}
    assert want <= set(keys)
    for c in extra:
        assert c["calibrated_target"] in (0.8, 0.9, 0.95)
        assert c["rule"].startswith("confident-majority@")
    none = analyse(t, "judge", labels=LABELS, thresholds=[0.5], all_judges=False,
                   calibration_targets=())
    assert "calibration" not in none

    stream = {"meta": {"n": 500, "reference": "judge x", "workers": ["learner:minilm", "vader"],
                       "target": 0.8, "delta": 0.1},
              "total": {"judge_call_rate": 0.7, "agreement_with_reference": 0.85},
              "windows": [{"items": "1-250", "end": 250, "labels_at_start": 0,
                           "judge_call_rate": 1.0, "decided_by_workers": 0,
                           "agreement_with_judge": None, "accuracy_vs_gold": None,
                           "learner_voting": 0.0},
                          {"items": "251-500", "end": 500, "labels_at_start": 250,
                           "judge_call_rate": 0.6, "decided_by_workers": 100,
                           "agreement_with_judge": 0.86, "accuracy_vs_gold": 0.7,
                           "learner_voting": 1.0}]}
    path = tmp_path / "stream.json"
    path.write_text(json.dumps(stream))
    attach_learner_stream(a, [path, path])
    assert len(a["learner_streams"]) == 2
    a["measured"] = {"skipped": "not in this test", "runs": []}
    files = write_report(a, tmp_path / "out")
    md = files["md"].read_text()
    assert "Criterion 2 with a guarantee" in md and "Learning worker" in md
    assert md.count("| 251-500 | 250 | 100.0 % | 60.0 % | 100 |") == 2
    assert files["png_calibration"].read_bytes()[:4] == b"\x89PNG"
    assert files["png_learner"].read_bytes()[:4] == b"\x89PNG"
    assert files["html"].read_text().count("data:image/png;base64,") == 5


def test_attach_learner_stream_errors_name_the_file(tmp_path: Path) -> None:
    a: dict[str, object] = {}
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        attach_learner_stream(a, tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        attach_learner_stream(a, bad)
    other = tmp_path / "other.json"
    other.write_text('{"meta": {}}')
    with pytest.raises(ValueError, match="not a learner stream result"):
        attach_learner_stream(a, other)
    attach_learner_stream(a, None)
    assert a == {}
