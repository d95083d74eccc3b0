"""Adaptive runs over a finite input (``--adaptive-method rank``): fit, rank, certify a cut, judge
the rest; the guarantee checked over random draws, resume, an unavailable judge (pure logic:
plain-Python workers and judge; the command's test uses real parts, in test_adaptive.py)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from speculabel.adaptive.finite import FiniteRun, FiniteState, classify_certified, fit_size
from speculabel.backends.base import FunctionBackend
from speculabel.backends.learner.backend import LearnerBackend
from speculabel.cascade.config import AdaptiveSettings
from speculabel.records import Item
from speculabel.tasks import SENTIMENT, Task
from test_adaptive import _judge, _lexicon, _stream
from test_learner import HashEmbedder

LABELS = SENTIMENT.label_names


def _noisy_population(n: int, seed: int = 0) -> tuple[list[Item], dict[str, str], FunctionBackend]:
    """Items whose worker is right with a probability that falls with its confidence: about
    80 % right overall, so a 0.85 target needs the judge on part of the input."""
    rng = np.random.default_rng(seed)
    items, truth, said = [], {}, {}
    for i in range(n):
        conf = float(rng.uniform(0.34, 1.0))
        lab = LABELS[int(rng.integers(3))]
        right = rng.random() < 0.45 + 0.5 * conf
        wrong = [x for x in LABELS if x != lab][int(rng.integers(2))]
        items.append(Item(f"p{i}", {"text": f"item {i}"}))
        truth[f"p{i}"] = lab
        said[f"p{i}"] = {x: (conf if x == (lab if right else wrong) else (1 - conf) / 2)
                         for x in LABELS}

    def fn(task: Task, its: Sequence[Item]) -> list[dict[str, float]]:
        return [said[str(it.id)] for it in its]

    return items, truth, FunctionBackend("noisy", fn)


def test_fit_size_follows_the_input_and_only_when_a_worker_learns() -> None:
    s = AdaptiveSettings()
    assert fit_size(1000, s, True) == 100 and fit_size(100, s, True) == 50
    assert fit_size(60_000, s, True) == 300 and fit_size(1000, s, False) == 0
    assert fit_size(1000, AdaptiveSettings(fit=40), True) == 40
    assert fit_size(30, AdaptiveSettings(fit=40), True) == 15  # never more than half


def test_rank_runs_certify_scope_dataset_only() -> None:
    with pytest.raises(ValueError, match="scope workers use --adaptive-method stream"):
        AdaptiveSettings(scope="workers", method="rank").check()
    AdaptiveSettings(scope="workers", method="stream").check()


def test_the_guarantee_holds_over_random_draws() -> None:
    """The split check: over 100 draws of the certification sample, the output's whole-data
    agreement with the judge falls below the target in at most delta of them."""
    items, truth, worker = _noisy_population(600)
    calls: list[str] = []
    judge = _judge(truth, calls)
    base = sum(max(worker.score(SENTIMENT, [it])[0].probs.items(), key=lambda kv: kv[1])[0]
               == truth[str(it.id)] for it in items) / len(items)
    assert 0.7 < base < 0.85  # the workers alone miss the target: the judge must help
    shares, below = [], 0
    for seed in range(100):
        out = classify_certified(SENTIMENT, [worker], judge, items, target=0.85, delta=0.1,
                                 seed=seed)
        agree = sum(r.label == truth[str(r.id)] for r in out.records) / len(items)
        below += agree < 0.85
        shares.append(sum(r.decided_by == "judge" for r in out.records) / len(items))
    assert below <= 10, below
    assert 0.05 < float(np.mean(shares)) < 0.8  # the workers decide a real share


def test_a_run_labels_every_item_once_in_input_order_and_saves_judge_calls(
        tmp_path: Path) -> None:
    items, truth = _stream(1000, seed=5)
    calls: list[str] = []
    learner = LearnerBackend(embedder=HashEmbedder(), min_per_class=5)
    out = classify_certified(SENTIMENT, [_lexicon(), learner], _judge(truth, calls), items,
                             target=0.9, seed=1, state=tmp_path / "state.json")
    assert [r.id for r in out.records] == [it.id for it in items]
    assert len(calls) == len(set(calls))  # the judge never labels an item twice
    assert out.certificate is not None and out.certificate["fit"] == 100
    judged = sum(r.decided_by == "judge" for r in out.records)
    assert judged == len(calls) and judged < 600
    assert sum(r.label == truth[str(r.id)] for r in out.records) >= 900
    assert "agreement with the judge over these 1000 items >= 0.9" in out.statement
    fit = [r for r in out.records if r.rule.endswith("fit sample")]
    assert len(fit) == 100 and all(r.decided_by == "judge" for r in fit)
    kept = [r for r in out.records if r.decided_by == "workers"]
    assert kept and all("rank cut" in r.rule for r in kept)


def _interrupted(items: list[Item], truth: dict[str, str], state: Path, calls: list[str],
                 stop: int) -> list[str]:
    learner = LearnerBackend(embedder=HashEmbedder(), min_per_class=5)
    s = AdaptiveSettings(target=0.9, seed=2)
    run = FiniteRun(SENTIMENT, [_lexicon(), learner], _judge(truth, calls), s, items,
                    FiniteState.open(state, len(items), s))
    got = []
    for rec in run.run():
        got.append(str(rec.id))
        if len(got) >= stop:
            break
    return got


@pytest.mark.parametrize("stop", [40, 700])  # during the fit; after the certificate
def test_a_stopped_run_resumes_from_its_state_and_pays_no_label_twice(
        tmp_path: Path, stop: int) -> None:
    items, truth = _stream(800, seed=9)
    calls: list[str] = []
    first = _interrupted(items, truth, tmp_path / "s.json", calls, stop)
    cert = FiniteState.open(tmp_path / "s.json", 800, AdaptiveSettings(target=0.9, seed=2))
    assert (cert.certificate is not None) == (stop > 80)
    learner = LearnerBackend(embedder=HashEmbedder(), min_per_class=5)
    s = AdaptiveSettings(target=0.9, seed=2)
    run = FiniteRun(SENTIMENT, [_lexicon(), learner], _judge(truth, calls), s, items,
                    FiniteState.open(tmp_path / "s.json", 800, s))
    rest = [str(r.id) for r in run.run(set(first))]
    assert sorted(first + rest) == sorted(str(it.id) for it in items)  # each once
    assert len(calls) == len(set(calls))
    # the same labels as a run that was never stopped
    fresh: list[str] = []
    whole = classify_certified(SENTIMENT, [_lexicon(), LearnerBackend(
        embedder=HashEmbedder(), min_per_class=5)], _judge(truth, fresh), items, target=0.9,
        seed=2)
    assert len(fresh) == len(calls)
    assert whole.certificate == FiniteState.open(tmp_path / "s.json", 800, s).certificate
    with pytest.raises(ValueError, match="other settings"):
        FiniteState.open(tmp_path / "s.json", 800, AdaptiveSettings(target=0.8, seed=2))


def test_an_unavailable_judge_leaves_retryable_records_that_a_rerun_fills(
        tmp_path: Path) -> None:
    items, truth, worker = _noisy_population(300, seed=4)
    down = {str(it.id) for it in random.Random(1).sample(items, 30)}
    up = {"on": False}

    def fn(task: Task, its: Sequence[Item]) -> list[dict[str, float]]:
        return [{truth[str(it.id)]: 1.0} for it in its]

    class Flaky(FunctionBackend):
        def score(self, task: Task, its: Sequence[Item]) -> list:  # type: ignore[override]
            from speculabel.records import Vote

            return [Vote.abstain(self.spec, "down", retryable=True)
                    if not up["on"] and str(it.id) in down else v
                    for it, v in zip(its, super().score(task, its), strict=True)]

    judge = Flaky("judge", fn)
    out = classify_certified(SENTIMENT, [worker], judge, items, target=0.85, seed=0,
                             state=tmp_path / "s.json", batch_size=1)
    missing = [r for r in out.records if r.error_kind == "no_judge"]
    assert missing and all(str(r.id) in down for r in missing)
    up["on"] = True
    again = classify_certified(SENTIMENT, [worker], judge, items, target=0.85, seed=0,
                               state=tmp_path / "s.json", batch_size=1)
    assert not [r for r in again.records if r.label is None]
    assert again.certificate == out.certificate  # the certificate is never re-issued


def test_plain_texts_in_and_records_in_input_order_with_bad_inputs_at_their_place() -> None:
    items, truth = _stream(300, seed=2)
    texts: list[object] = [it.fields["text"] for it in items]
    texts[7] = None
    texts[100] = float("nan")
    by_text = {it.fields["text"]: truth[str(it.id)] for it in items}

    def fn(task: Task, its: Sequence[Item]) -> list[dict[str, float]]:
        return [{by_text[it.fields["text"]]: 1.0} for it in its]

    out = classify_certified("sentiment", [_lexicon()], FunctionBackend("judge", fn), texts,
                             target=0.8)
    assert [r.id for r in out.records] == [str(i) for i in range(300)]
    assert out.records[7].error_kind == "input" and out.records[100].error_kind == "input"
    assert all(r.label is not None for k, r in enumerate(out.records) if k not in (7, 100))
    assert out.certificate is not None and out.certificate["n_items"] == 298
    assert len(out.labels) == 300
    from speculabel import SpeculabelError

    with pytest.raises(SpeculabelError, match="target"):
        classify_certified("sentiment", [_lexicon()], FunctionBackend("judge", fn), texts,
                           target=1.5)
