"""calibrate(buy="sequential"): the judge labels a growing random sample until more labels stop
paying; the statement stays at the overall delta; workers are asked once per item; a learning
worker runs with the fit of the look that was kept (pure logic: plain-Python models and a hash
embedder; the real workers run in scripts/bench_buying.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest

import needs
from speculabel import FunctionBackend, Item, SpeculabelError, calibrate
from speculabel.certify.buying import look_sizes
from speculabel.tasks import SENTIMENT, Task

LABELS = SENTIMENT.label_names


def truth(text: str) -> str:
    return LABELS[int(text.split()[-1]) % 3]


def texts(n: int) -> list[str]:
    return [f"ticket number {i}" for i in range(n)]


class Counting:
    """A worker right on a seeded share of the items, confident when right; counts the items
    it is asked about."""

    def __init__(self, name: str, accuracy: float, seed: int,
                 label_of: Callable[[Item], str] | None = None) -> None:
        self.asked: list[str] = []
        rng = random.Random(seed)
        right: dict[str, bool] = {}

        def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
            out = []
            for it in items:
                self.asked.append(it.id)
                t = label_of(it) if label_of else truth(it.fields["text"])
                ok = right.setdefault(it.id, rng.random() < accuracy)
                lab = t if ok else next(x for x in LABELS if x != t)
                p = 0.95 if ok else 0.5
                out.append({x: p if x == lab else (1 - p) / 2 for x in LABELS})
            return out

        self.backend = FunctionBackend(name, fn)


def gold_judge() -> tuple[FunctionBackend, list[str]]:
    asked: list[str] = []

    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        asked.extend(it.id for it in items)
        return [{truth(it.fields["text"]): 1.0} for it in items]

    return FunctionBackend("judge", fn), asked


def test_look_sizes_double_up_to_all_items() -> None:
    assert look_sizes(1000, 200) == [200, 400, 800, 1000]
    assert look_sizes(800, 200) == [200, 400, 800]
    assert look_sizes(150, 200) == [150]


def test_good_workers_stop_buying_early_and_the_statement_is_at_the_full_delta() -> None:
    a, b = Counting("a", 0.97, 1), Counting("b", 0.96, 2)
    judge, asked = gold_judge()
    xs = texts(3200)
    cert = calibrate(task="sentiment", workers=[a.backend, b.backend], items=xs, judge=judge,
                     scope="dataset", target=0.85, delta=0.1, buy="sequential", first=200)
    ex = cert.extra
    assert ex["looks_planned"] == 5 and ex["level_per_look"] == pytest.approx(0.1 / 5)
    assert ex["labels_bought"] < 3200 and len(asked) == ex["labels_bought"]
    assert len(set(asked)) == len(asked)  # no item labelled twice
    assert [lk["items"] for lk in ex["looks"]] == [200, 400, 800, 1600, 3200][:len(ex["looks"])]
    assert cert.threshold is not None and cert.judge_call_rate is not None
    assert cert.statement.endswith("with probability >= 0.9") and cert.delta == 0.1
    # a worker that learns nothing is asked about each bought item once, whatever the looks
    assert sorted(a.asked) == sorted(set(a.asked)) and len(a.asked) == ex["labels_bought"]
    # the certificate's cascade runs the caller's own worker objects, not the run's memo
    assert [w for w in cert.workers] == [a.backend, b.backend]


def test_with_a_volume_it_buys_while_coverage_pays_for_the_labels() -> None:
    judge, _ = gold_judge()
    xs = texts(3200)

    def run(volume: int | None) -> int:
        a, b = Counting("a", 0.9, 3), Counting("b", 0.9, 4)
        cert = calibrate(task="sentiment", workers=[a.backend, b.backend], items=xs,
                         judge=judge, scope="dataset", target=0.85, delta=0.1,
                         buy="sequential", first=200, volume=volume)
        return int(cert.extra["labels_bought"])

    # ten million items to classify: any coverage gained pays for more labels
    assert run(10_000_000) >= run(None)
    assert run(10) == 400  # a tiny job: the second look's gain never pays for the third


def test_a_learning_worker_keeps_the_fit_of_the_look_that_was_kept() -> None:
    needs.module("sklearn", needs.EMBED)
    from speculabel.backends.learner.backend import LearnerBackend
    from test_learner import HashEmbedder, _stream

    items, labels = _stream(1600, seed=5)
    gold = {it.id: lab for it, lab in zip(items, labels, strict=True)}
    judge = FunctionBackend("judge", lambda t, its: [{gold[it.id]: 1.0} for it in its])
    learner = LearnerBackend(embedder=HashEmbedder())
    a = Counting("a", 0.9, 6, label_of=lambda it: gold[it.id])
    cert = calibrate(task="sentiment", workers=[learner, a.backend], items=items, judge=judge,
                     scope="dataset", target=0.85, delta=0.1, buy="sequential", first=100)
    looks = cert.extra["looks"]
    best = max(looks, key=lambda lk: lk["coverage"] or 0.0)
    assert best["coverage"] > 0.3 and cert.threshold == best["threshold"]
    assert cert.judge_call_rate == pytest.approx(1 - best["coverage"])
    assert cert.workers[0] is learner
    # the cascade it builds decides with the learner as certified (same votes as a refit)
    recs = cert.cascade(judge).classify(items[:200])
    assert len(recs) == 200 and {r.decided_by for r in recs} <= {"workers", "judge"}


def test_sequential_buying_refuses_what_it_cannot_do() -> None:
    judge, _ = gold_judge()
    w = Counting("a", 0.9, 1).backend
    xs = texts(400)
    with pytest.raises(SpeculabelError, match="buy must be"):
        calibrate(task="sentiment", workers=[w], items=xs, judge=judge, buy="some")
    with pytest.raises(SpeculabelError, match="no references"):
        calibrate(task="sentiment", workers=[w], items=xs, judge=judge, buy="sequential",
                  references=[truth(x) for x in xs])
    with pytest.raises(SpeculabelError, match="judge="):
        calibrate(task="sentiment", workers=[w], items=xs, buy="sequential")
    with pytest.raises(SpeculabelError, match="non-inferior"):
        calibrate(task="sentiment", workers=[w], items=xs, judge=judge, buy="sequential",
                  scope="non-inferior", target=0.02)


def test_the_bench_table_counts_calibration_labels_and_held_out_judge_calls() -> None:
    from speculabel.bench.buying import table, total_calls

    runs = [{"bought": 400, "coverage": 0.8}, {"bought": 800, "coverage": 0.9}]
    assert total_calls(runs, 1000) == pytest.approx((400 + 200 + 800 + 100) / 2)
    row = {"input": "pairs:test:0", "calibration_items": 1000, "held_out_items": 1000,
           "way": "sequential", "labels_bought_mean": 600, "held_out_coverage_mean": 0.85,
           "held_out_coverage_min": 0.8, "agreement_mean": 0.9, "agreement_min": 0.88,
           "violation_rate": 0.0}
    assert "| sequential | 600 | 85.0 / 80.0 | 750 | 0.900 / 0.880 | 0.00 |" in table([row])


def test_bench_inputs_are_parsed_before_anything_runs(tmp_path: object) -> None:
    from pathlib import Path

    from speculabel.bench.inputs import run_inputs, split_input

    assert split_input("pairs:test:0:1000") == ("pairs:test:0", 1000)
    ran: list[str] = []
    out = Path(str(tmp_path)) / "rows.json"
    with pytest.raises(ValueError, match="'tweets:test'"):
        run_inputs(["pairs:test:0:10", "tweets:test"], lambda s, n, say: ran.append(s) or [],
                   out, quiet=True)
    assert ran == [] and not out.exists()
    rows = run_inputs(["a:1", "b:2"], lambda s, n, say: [{"input": s, "n": n}], out, quiet=True)
    assert rows == [{"input": "a", "n": 1}, {"input": "b", "n": 2}]
    assert out.read_text().count('"input"') == 2


def test_cli_refuses_sequential_buying_with_gold_before_any_model_loads(tmp_path: object) -> None:
    from typer.testing import CliRunner

    from speculabel.cli import app

    base = ["calibrate", "tweeteval:val:50", "--workers", "vader", "--judge", "vader", "-o",
            f"{tmp_path}/c.toml"]
    res = CliRunner().invoke(app, [*base, "--buy", "sequential", "--reference", "gold"])
    assert res.exit_code == 2 and "buys the judge's labels" in res.output
    res = CliRunner().invoke(app, [*base, "--buy", "some"])
    assert res.exit_code == 2 and "--buy must be all or sequential" in res.output


@pytest.mark.slow
def test_cli_buys_part_of_the_labels_and_writes_a_config_classify_runs(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real parts: MiniLM learner imitating a real (lexicon) judge on real tweets."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from speculabel.cli import app
    from speculabel.io.datasets import tweeteval

    needs.module("sentence_transformers", needs.EMBED)
    needs.data(lambda: tweeteval("val", limit=10), "tweeteval-sentiment")
    tmp = Path(str(tmp_path))
    monkeypatch.setenv("SPECULABEL_HOME", str(tmp / "home"))
    cfg = tmp / "c.toml"
    args = ["calibrate", "tweeteval:val:1600", "--workers", "learner:minilm", "--judge",
            "vader", "--target", "0.9", "--buy", "sequential", "--first", "200", "--volume",
            "100", "-o", str(cfg), "--votes", str(tmp / "v.sqlite")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    bought = int(res.output.split("judge labels bought: ")[1].split(" of ")[0])
    # a job of 100 items never pays for the labels of a third look
    assert bought <= 400 and "look at 200 items" in res.output
    assert f"judge: {bought} labels bought" in res.output
    text = cfg.read_text()
    assert "with probability >= 0.9" in text and 'judge = "vader"' in text
    src, out = tmp / "tweets.csv", tmp / "run.jsonl"
    rows = tweeteval("test", limit=100).items
    src.write_text("text\n" + "".join(json.dumps(it.fields["text"]) + "\n" for it in rows))
    res = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--config", str(cfg),
                                   "-q"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 100 and any(r["decided_by"] == "workers" for r in recs)


def blurry(name: str, accuracy: float, seed: int) -> FunctionBackend:
    """A worker whose confidence overlaps between its right and wrong answers (right:
    uniform in [0.45, 1), wrong: uniform in [0.4, 0.85)), fixed per item."""
    rng = random.Random(seed)
    memo: dict[str, tuple[str, float]] = {}

    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        out = []
        for it in items:
            if it.id not in memo:
                t = truth(it.fields["text"])
                if rng.random() < accuracy:
                    memo[it.id] = (t, rng.uniform(0.45, 1.0))
                else:
                    memo[it.id] = (rng.choice([x for x in LABELS if x != t]),
                                   rng.uniform(0.4, 0.85))
            lab, p = memo[it.id]
            out.append({x: p if x == lab else (1 - p) / 2 for x in LABELS})
        return out

    return FunctionBackend(name, fn)


@pytest.mark.slow
def test_split_check_the_kept_look_holds_its_target_on_the_population() -> None:
    """Over 60 random calibration samples of one population, the certified cascade's
    whole-data agreement with the judge over the whole population is below the target in at
    most delta of them (the union bound over looks and the best-look choice included)."""
    n_pop, target, delta = 6000, 0.97, 0.1
    xs = texts(n_pop)
    a, b = blurry("a", 0.75, 11), blurry("b", 0.7, 12)
    judge, _ = gold_judge()
    pop = [Item(str(i), {"text": t}) for i, t in enumerate(xs)]
    truth_of = {it.id: truth(it.fields["text"]) for it in pop}
    misses, certified, realised = 0, 0, []
    for draw in range(60):
        sample = random.Random(100 + draw).sample(pop, 1000)
        cert = calibrate(task="sentiment", workers=[a, b], items=sample, judge=judge,
                         scope="dataset", target=target, delta=delta, buy="sequential",
                         first=125, seed=draw, volume=50_000)
        if cert.threshold is None:
            continue
        certified += 1
        recs = cert.cascade(judge).classify(pop)
        agree = sum(r.label == truth_of[r.id] for r in recs) / n_pop
        realised.append(agree)
        misses += agree < target
    assert certified >= 50, "the workers are good enough to certify most draws"
    assert min(realised) < target + 0.01, "the cut should matter: near the edge at times"
    assert misses <= 0.1 * 60 + 3, (misses, sorted(realised)[:5])  # delta, plus slack
