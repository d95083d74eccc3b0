"""The worker bench's scoring: agreement, calibration error and certified coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.bench import workers
from speculabel.io.datasets import Labelled
from speculabel.records import Item

LABELS = ("negative", "neutral", "positive")


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident() -> None:
    rng = np.random.default_rng(0)
    conf = np.full(20000, 0.7)
    right = rng.random(20000) < 0.7
    assert workers.ece(conf, right) < 0.02
    assert workers.ece(np.full(20000, 0.99), right) == pytest.approx(0.29, abs=0.02)


def test_a_worker_that_copies_the_reference_is_certified_on_everything() -> None:
    rng = np.random.default_rng(1)
    ref = [LABELS[i] for i in rng.integers(0, 3, 1000)]
    exact = np.zeros((1000, 3))
    exact[np.arange(1000), [LABELS.index(r) for r in ref]] = 1.0
    row = workers.score_variant(LABELS, exact, ref, ref)
    assert row["agreement"] == 1.0 and row["feasible"] and row["coverage"] == 1.0
    # a guessing worker agrees a third of the time: whole-data agreement 0.85 leaves it little
    guess = rng.dirichlet(np.ones(3), size=1000)
    row = workers.score_variant(LABELS, guess, ref, ref)
    assert row["agreement"] < 0.45 and row["coverage"] < 0.35


def test_the_bench_refuses_an_unknown_variant_and_tables_its_rows() -> None:
    def data(n: int, name: str) -> Labelled:
        items = [Item(id=str(i), fields={"text": t}) for i, t in enumerate(
            ["I love this, great!", "awful, I hate it", "the bus leaves at noon"] * (n // 3))]
        return Labelled(name, items, ["positive", "negative", "neutral"] * (n // 3), "test")

    with pytest.raises(ValueError, match="unknown worker variant"):
        workers.bench(data(3, "fit"), data(3, "held"), ["minilm-large"])
    needs.module("vaderSentiment", needs.EMBED)
    report = workers.bench(data(30, "fit"), data(60, "held"), ["vader"], progress=lambda s: None)
    (row,) = report["rows"]
    assert report["reference"] == "gold" and row["agreement"] == 1.0
    assert "vader" in workers.table(report)


def test_a_pair_decides_only_where_both_name_the_same_label() -> None:
    rng = np.random.default_rng(2)
    ref = [LABELS[i] for i in rng.integers(0, 3, 600)]
    idx = np.array([LABELS.index(r) for r in ref])
    right = np.full((600, 3), 0.1)
    right[np.arange(600), idx] = 0.8
    other = np.full((600, 3), 0.1)
    other[np.arange(600), (idx + np.arange(600) % 2) % 3] = 0.8  # right on every other item
    row = workers.score_pair(LABELS, right, other, ref, ref)
    assert row["decided"] == 0.5 and row["agreement"] == 1.0
    assert 0.45 <= row["coverage"] <= 0.5  # never more than the items the two agree on
    wrong = np.roll(right, 1, axis=1)
    none = workers.score_pair(LABELS, right, wrong, ref, ref)
    assert none["decided"] == 0.0 and none["coverage"] == 0.0


def test_speedup_counts_the_worker_everywhere_and_the_judge_where_it_may_not_decide() -> None:
    assert workers.speedup(0.0, 0.75, 1000.0) == pytest.approx(4.0)
    assert workers.speedup(10.0, 0.0, 1000.0) == pytest.approx(1000 / 1010)  # slower than alone
    assert workers.speedup(10.0, 1.0, 1000.0) == pytest.approx(100.0)


def _tweets(n: int) -> Labelled:
    texts = ["I love this, great!", "awful, I hate it", "the bus leaves at noon"]
    items = [Item(id=str(i), fields={"text": texts[i % 3]}) for i in range(n)]
    return Labelled("t", items, [("positive", "negative", "neutral")[i % 3] for i in range(n)], "t")


def test_judge_labels_are_stored_and_a_second_bench_calls_no_judge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs.module("vaderSentiment", needs.EMBED)
    from speculabel.backends.lexicon import VaderBackend

    store = tmp_path / "votes.sqlite"
    items = _tweets(9).items
    labels, ms = workers.judge_labels(items, "vader", store, progress=lambda s: None)
    assert labels[:3] == ["positive", "negative", "neutral"] and ms >= 0.0

    def no_call(*a: object, **k: object) -> object:
        raise AssertionError("the judge was asked again")

    monkeypatch.setattr(VaderBackend, "score", no_call)
    again, _ = workers.judge_labels(items, "vader", store, progress=lambda s: None)
    assert again == labels


def test_with_the_judges_cost_rows_and_pairs_carry_a_speedup() -> None:
    needs.module("vaderSentiment", needs.EMBED)
    report = workers.bench(_tweets(30), _tweets(60), ["vader"], judge_ms=900.0,
                           progress=lambda s: None)
    (row,) = report["rows"]
    assert row["speedup"] == pytest.approx(workers.speedup(row["ms_per_item"], row["coverage"],
                                                           900.0), abs=0.01)
    assert report["judge_ms"] == 900.0 and "speedup" in workers.table(report)


def test_the_script_refuses_a_bad_judge_cost_before_loading_anything() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "worker_bench.py"
    got = subprocess.run([sys.executable, str(script), "--judge-ms", "0"], capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 2 and got.stderr.strip().startswith("--judge-ms")
    assert "Traceback" not in got.stderr


def test_the_pair_bench_refuses_an_unknown_variant_and_a_judge(tmp_path: Path) -> None:
    import subprocess
    import sys

    from speculabel.bench import pairworkers

    with pytest.raises(ValueError, match="unknown pair variant"):
        pairworkers.bench(10, 10, ["minilm", "cross-encoder"])
    got = subprocess.run([sys.executable, "scripts/worker_bench.py", "--task", "pairs",
                          "--judge", "qwen2.5-1.5b", "--out", str(tmp_path / "p.json")],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert got.returncode == 2 and "reference is gold" in got.stderr


def test_the_adaptive_bench_gives_learner_options_to_the_learner_only() -> None:
    needs.module("sklearn", needs.EMBED)
    from speculabel.bench.finite import _workers

    sim, lrn = _workers(["similarity:minilm", "learner:minilm"], {"finetune": True})
    assert getattr(lrn, "finetune", None) is True and not hasattr(sim, "finetune")
