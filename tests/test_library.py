"""The Python library as a data scientist uses it: records in input order, one record per item
whatever fails, ``predict`` / ``predict_proba`` / ``classify_frame`` aligned with their input,
and the one decide core giving the same records on every path (pure logic: plain-Python
models; the real models run in test_cli_e2e and test_llamacpp)."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

import pytest

import needs
from speculabel import Cascade, FunctionBackend, Item, SpeculabelError, make_policy
from speculabel.backends.base import Backend
from speculabel.bench.simulate import VoteTable, simulate
from speculabel.errors import PendingError
from speculabel.records import Vote
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET, Task

LABELS = SENTIMENT.label_names


def by_text(name: str, fn: object, p: float = 0.9, latency: float = 0.01) -> FunctionBackend:
    """A model labelling each text with ``fn(text)`` at confidence ``p``."""

    def score(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        out = []
        for it in items:
            lab = fn(" ".join(it.fields.values()))  # type: ignore[operator]
            rest = (1 - p) / (len(task.label_names) - 1)
            out.append({x: (p if x == lab else rest) for x in task.label_names})
        return out

    b = FunctionBackend(name, score)
    return b


def word_label(text: str) -> str:
    return "positive" if "good" in text else "negative" if "bad" in text else "neutral"


def length_label(text: str) -> str:
    return LABELS[len(text) % 3]


class Flaky(Backend):
    """A judge that is unavailable (retryably) for every item whose id is a multiple of 3,
    for ``down_tries`` tries (forever when None)."""

    def __init__(self, down_tries: int | None = None) -> None:
        self.spec, self.down_tries, self.tries = "flaky-judge", down_tries, {}  # type: ignore[var-annotated]

    def fingerprint(self) -> str:
        return self.spec

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        out = []
        for it in items:
            n = self.tries[it.id] = self.tries.get(it.id, 0) + 1
            down = int(it.id) % 3 == 0 and (self.down_tries is None or n <= self.down_tries)
            if down:
                out.append(Vote.abstain(self.spec, "unavailable: 503", retryable=True))
            else:
                out.append(Vote.from_probs(self.spec, {x: 0.8 if x == word_label(it.fields["text"])
                                                       else 0.1 for x in task.label_names}))
        return out


def texts(n: int) -> list[str]:
    words = ["good", "bad", "fine", "okay"]
    return [f"{words[i % 4]} item {i} " + "x" * (i % 5) for i in range(n)]


def cascade(judge: Backend | None = None, **kw: object) -> Cascade:
    return Cascade(SENTIMENT, [by_text("w1", word_label), by_text("w2", length_label)],
                   judge if judge is not None else by_text("judge", word_label),
                   make_policy("majority"), retry_wait_s=0, **kw)  # type: ignore[arg-type]


def test_records_come_back_in_input_order_with_shuffled_ids() -> None:
    ids = [str(i) for i in range(40)]
    random.Random(3).shuffle(ids)
    items = [Item(i, {"text": t}) for i, t in zip(ids, texts(40), strict=True)]
    c = cascade(batch_size=8)
    recs = c.classify(items)
    assert [r.id for r in recs] == ids
    assert {r.decided_by for r in recs} == {"workers", "judge"}  # both kinds interleave
    assert [r.position for r in recs] == list(range(40))


def test_unordered_stream_yields_workers_first_with_positions() -> None:
    items = [Item(str(i), {"text": t}) for i, t in enumerate(texts(8))]
    recs = list(cascade(batch_size=8).classify_iter(items, ordered=False))
    by = [r.decided_by for r in recs]
    assert by == sorted(by, key=lambda d: d != "workers")  # workers' records first
    assert sorted(r.position for r in recs) == list(range(8))  # type: ignore[type-var]
    assert all(items[r.position].id == r.id for r in recs)  # type: ignore[index]


def test_a_judge_down_for_one_item_in_three_still_gives_every_item_a_record() -> None:
    items = [Item(str(i), {"text": t}) for i, t in enumerate(texts(50))]
    c = cascade(Flaky())
    recs = c.classify(items)
    assert len(recs) == 50 and [r.id for r in recs] == [it.id for it in items]
    pending = [r for r in recs if r.error_kind == "no_judge"]
    assert pending and all(int(r.id or 0) % 3 == 0 and r.decided_by is None for r in pending)
    assert c.stats.pending == len(pending) == len(c.stats.pending_ids)
    with pytest.raises(PendingError) as e:
        cascade(Flaky()).classify(items, on_pending="raise")
    assert sorted(e.value.ids, key=int) == sorted((r.id or "" for r in pending), key=int)
    assert isinstance(e.value, SpeculabelError) and "undecided" in str(e.value)
    assert [r.id for r in e.value.records] == [it.id for it in items]


def test_a_judge_that_comes_back_within_the_retry_budget_decides_everything() -> None:
    items = [Item(str(i), {"text": t}) for i, t in enumerate(texts(30))]
    judge = Flaky(down_tries=2)
    recs = cascade(judge, judge_retries=2).classify(items)
    assert all(r.error is None for r in recs)
    assert max(judge.tries.values()) == 3  # two retries, then it answered


def test_bad_texts_get_input_error_records_in_place() -> None:
    values: list[object] = ["good one", None, float("nan"), 3, "", "   ", "bad one", ["a"]]
    items = [Item(str(i), {"text": v}) for i, v in enumerate(values)]  # type: ignore[dict-item]
    recs = cascade().classify(items)
    assert [r.id for r in recs] == [str(i) for i in range(len(values))]
    kinds = [r.error_kind for r in recs]
    assert kinds == [None, "input", "input", "input", "input", "input", None, "input"]
    assert "not text" in (recs[2].error or "") and "empty" in (recs[4].error or "")
    # a missing field too
    rec = cascade().classify([Item("m", {})])[0]
    assert rec.error_kind == "input" and "missing" in (rec.error or "")


@pytest.mark.parametrize("bad", [math.nan, -0.5, "0.9", None])
def test_a_broken_distribution_is_an_abstention_never_a_decision(bad: object) -> None:
    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, object]]:
        return [{"positive": bad, "negative": 0.05, "neutral": 0.05} for _ in items]

    broken = FunctionBackend("broken", fn)  # type: ignore[arg-type]
    c = Cascade(SENTIMENT, [broken, by_text("w", lambda t: "positive", 0.95)],
                by_text("judge", word_label), make_policy("confident-majority", 0.9))
    rec = c.classify([Item("0", {"text": "good"})])[0]
    assert rec.decided_by == "judge"
    assert rec.votes[0].label is None and "positive" in (rec.votes[0].error or "")


def test_a_raw_vote_with_nan_is_refused_by_the_core_too() -> None:
    class Raw(Backend):
        spec = "raw"

        def fingerprint(self) -> str:
            return "raw"

        def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
            return [Vote("raw", "positive", {"positive": math.nan, "negative": 0.0,
                                             "neutral": 0.0}) for _ in items]

    c = Cascade(SENTIMENT, [Raw(), by_text("w", lambda t: "positive")],
                by_text("judge", word_label), make_policy("confident-majority", 0.9))
    rec = c.classify([Item("0", {"text": "bad"})])[0]
    assert rec.decided_by == "judge" and rec.label == "negative"


def test_predict_and_predict_proba_align_with_the_input() -> None:
    xs = ["good", "bad", "good", None, "fine day", "good"]  # duplicates and a failure
    c = cascade()
    labels = c.predict(xs)
    assert labels == ["positive", "negative", "positive", None, "neutral", "positive"]
    proba = c.predict_proba(xs)
    assert proba.shape == (6, 3) and c.classes_ == LABELS
    assert all(math.isnan(v) for v in proba[3])
    for row, lab in zip(proba, labels, strict=True):
        if lab is not None:
            assert abs(row.sum() - 1) < 1e-6 and LABELS[int(row.argmax())] == lab


def test_predict_takes_pairs_for_a_pair_task() -> None:
    same = by_text("same", lambda t: "similar")
    c = Cascade(SIMILAR_TICKET, [same, by_text("same2", lambda t: "similar")],
                by_text("judge", lambda t: "not_similar"), make_policy("majority"))
    assert c.predict([("a", "b"), ("c", "d")]) == ["similar", "similar"]
    with pytest.raises(SpeculabelError, match="pairs"):
        c.predict(["only one text"])


def test_classify_frame_keeps_the_index_and_adds_columns() -> None:
    pd = needs.module("pandas", needs.RAY)
    df = pd.DataFrame({"text": ["good", None, "bad", "good"], "n": [1, 2, 3, 4]},
                      index=[10, 7, 3, 7])
    out = cascade().classify_frame(df, text="text")
    assert list(out.index) == [10, 7, 3, 7] and list(out["n"]) == [1, 2, 3, 4]
    assert [x if isinstance(x, str) else None for x in out["label"]] == [
        "positive", None, "negative", "positive"]
    assert out["error"].notna().tolist() == [False, True, False, False]
    assert out["confidence"].iloc[0] > 0.5
    assert "label" not in df.columns  # a copy
    df["label"] = [r.label for r in cascade().classify(
        [Item(str(i), {"text": t}) for i, t in zip(df.index, df["text"], strict=True)])]
    assert df["label"].equals(out["label"])
    with pytest.raises(SpeculabelError, match="no column 'txt'"):
        cascade().classify_frame(df, text="txt")


class Replay(Backend):
    """Stored votes handed back as a live model would give them (latency included)."""

    def __init__(self, spec: str, votes: dict[str, Vote]) -> None:
        self.spec, self.votes = spec, votes

    def fingerprint(self) -> str:
        return self.spec

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        return [dataclasses.replace(self.votes[it.id]) for it in items]


def test_the_same_votes_give_the_same_records_on_every_path() -> None:
    """The live cascade and the bench's replay over stored votes (the Ray steps: test_scale)
    decide through one core: the same label, decider and latency for every item."""
    items = [Item(str(i), {"text": t}) for i, t in enumerate(texts(24))]
    models = {"w1": by_text("w1", word_label, 0.8), "w2": by_text("w2", length_label, 0.7),
              "w3": by_text("w3", lambda t: "neutral", 0.6), "judge": by_text("judge", word_label)}
    table = VoteTable({m: [dataclasses.replace(v, latency_s=0.01 * (k + 1) + 0.001 * j)
                           for j, v in enumerate(b.score(SENTIMENT, items))]
                       for k, (m, b) in enumerate(models.items())})
    for rule, early, parallel in [("majority", False, False), ("confident-majority@0.75", False, True),
                                  ("majority", True, True), ("unanimous", True, False)]:
        name, _, thr = rule.partition("@")
        policy = make_policy(name, float(thr) if thr else None)
        replay = {m: Replay(m, {it.id: v for it, v in zip(items, table.votes[m], strict=True)})
                  for m in models}
        c = Cascade(SENTIMENT, [replay["w1"], replay["w2"], replay["w3"]], replay["judge"],
                    policy, early_exit=early, parallel_workers=parallel)
        live = c.classify(items)
        sim = simulate(table, ["w1", "w2", "w3"], "judge", policy, early_exit=early,
                       parallel=parallel)
        assert [r.label for r in live] == sim.final_labels
        assert [r.decided_by == "workers" for r in live] == sim.decided
        assert [r.latency_s for r in live] == pytest.approx(sim.item_latency_s)
        assert {r.decided_by for r in live} == {"workers", "judge"}


def noisy(name: str, accuracy: float, seed: int) -> FunctionBackend:
    """A worker right on a share ``accuracy`` of the items (by a seeded draw), confident when
    right, less when wrong: the kind of score a certificate can use."""
    rng = random.Random(seed)
    right = {}

    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        out = []
        for it in items:
            ok = right.setdefault(it.id, rng.random() < accuracy)
            truth = word_label(it.fields["text"])
            lab = truth if ok else next(x for x in task.label_names if x != truth)
            p = 0.9 if ok else 0.55
            out.append({x: p if x == lab else (1 - p) / 2 for x in task.label_names})
        return out

    return FunctionBackend(name, fn)


def test_calibrate_from_python_with_own_backends_and_labels(tmp_path: object) -> None:
    from pathlib import Path

    from speculabel import calibrate

    xs = texts(600)
    gold = [word_label(t) for t in xs]
    cert = calibrate(task="sentiment", workers=[noisy("a", 0.85, 1), noisy("b", 0.8, 2)],
                     items=xs, references=gold, scope="workers", target=0.9, delta=0.1)
    assert cert.threshold is not None and 0 <= cert.threshold <= 1
    assert cert.statement == "agreement >= 0.9 on the items the workers decide, with probability >= 0.9"
    assert cert.judge_call_rate is not None and cert.judge_call_rate < 1
    c = cert.cascade(by_text("judge", word_label))
    recs = c.classify([Item(str(i), {"text": t}) for i, t in enumerate(xs[:50])])
    assert len(recs) == 50 and {r.decided_by for r in recs} <= {"workers", "judge"}
    out = cert.save(Path(str(tmp_path)) / "c.toml", judge="qwen2.5-1.5b")
    text = out.read_text(encoding="utf-8")
    assert "threshold" in text and "qwen2.5-1.5b" in text
    # an impossible target: no threshold, a statement that says so, nothing to save
    none = calibrate(task="sentiment", workers=[noisy("a", 0.5, 1), noisy("b", 0.5, 2)],
                     items=xs[:100], references=gold[:100], scope="workers", target=0.99)
    assert none.threshold is None and none.statement
    with pytest.raises(SpeculabelError, match="nothing to save"):
        none.save(Path(str(tmp_path)) / "none.toml")


def test_calibrate_asks_the_judge_when_given_no_labels_and_refuses_bad_settings() -> None:
    from speculabel import calibrate

    xs = texts(300)
    cert = calibrate(task="sentiment", workers=[noisy("a", 0.9, 3), noisy("b", 0.9, 4)],
                     items=xs, judge=by_text("judge", word_label), scope="dataset", target=0.85)
    assert cert.threshold is not None and cert.reference == "judge"
    with pytest.raises(SpeculabelError, match="scope"):
        calibrate(task="sentiment", workers=[noisy("a", 0.9, 3)], items=xs, references=xs,
                  scope="everything")
    with pytest.raises(SpeculabelError, match="300 items"):
        calibrate(task="sentiment", workers=[noisy("a", 0.9, 3)], items=xs, references=["x"])
    with pytest.raises(SpeculabelError, match="judge"):
        calibrate(task="sentiment", workers=[noisy("a", 0.9, 3)], items=xs, scope="dataset")
    with pytest.raises(SpeculabelError, match="strictly between 0 and 1"):
        calibrate(task="sentiment", workers=[noisy("a", 0.9, 3)], items=xs,
                  references=[word_label(t) for t in xs], target=1.0)


class Cheap(Backend):
    """A cheap worker (an embedding or lexicon kind): it asks for large batches."""

    batch_hint = 64

    def __init__(self, spec: str, fn: object) -> None:
        self.spec, self.fn, self.calls = spec, fn, []  # type: ignore[var-annotated]

    def fingerprint(self) -> str:
        return self.spec

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        self.calls.append(len(items))
        return [Vote.from_probs(self.spec, {x: 0.9 if x == self.fn(it.fields["text"])  # type: ignore[operator]
                                            else 0.05 for x in task.label_names}) for it in items]


def test_cheap_workers_get_growing_batches_and_the_judge_its_own() -> None:
    a, b = Cheap("a", word_label), Cheap("b", length_label)
    judge_sizes: list[int] = []

    def judge_fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        judge_sizes.append(len(items))
        return [{x: 0.8 if x == word_label(it.fields["text"]) else 0.1 for x in task.label_names}
                for it in items]

    c = Cascade(SENTIMENT, [a, b], FunctionBackend("judge", judge_fn), make_policy("majority"),
                batch_size=8)
    assert c.worker_batch == 64
    recs = c.classify([Item(str(i), {"text": t}) for i, t in enumerate(texts(300))])
    assert [r.id for r in recs] == [str(i) for i in range(300)]
    assert a.calls[:4] == [8, 16, 32, 64] and max(a.calls) == 64 and sum(a.calls) == 300
    assert judge_sizes and max(judge_sizes) <= 8
    # an LLM-like worker (no hint) keeps the cascade at its batch size
    slow = by_text("slow", word_label)
    assert Cascade(SENTIMENT, [a, slow], None, make_policy("majority")).worker_batch == 8


def test_workers_sharing_an_embedder_embed_each_text_once() -> None:
    import numpy as np

    from speculabel.backends.learner.embed import MiniLMEmbedder

    seen: list[str] = []

    class Model:
        def encode(self, texts: list[str], **kw: object) -> np.ndarray:
            seen.extend(texts)
            return np.ones((len(texts), 4), dtype=np.float32)

    emb = MiniLMEmbedder()
    emb._model = Model()
    emb(["a", "b", "a"])
    emb(["b", "c"])
    assert seen == ["a", "b", "c"]
    emb.forget()
    emb(["a"])
    assert seen == ["a", "b", "c", "a"]


@pytest.mark.slow
def test_the_demo_is_a_library_function(smollm2_path: object) -> None:
    from speculabel.bench.demo import demo_settings, run_demo_task

    settings, note = demo_settings("sentiment", ["vader"], "smollm2-135m", "majority", None,
                                   print)
    run = run_demo_task(settings, note)
    assert len(run.records) == len(run.judge_votes) == len(run.items) == 30
    assert [r.id for r in run.records] == [it.id for it in run.items]
    assert 0 <= run.accuracy <= 1 and run.cascade_s > 0 and run.judge_s > 0


def test_a_file_run_from_python_resumes_where_it_stopped(tmp_path: object) -> None:
    """FileRun / classify_file: the library behind `classify`; stop iterating half-way, run
    again: every row exactly once, in order, the bad row at its place."""
    import csv
    import json
    from pathlib import Path

    from speculabel.cascade.config import make_config
    from speculabel.runs import FileRun, classify_file

    needs.module("vaderSentiment", needs.BENCH)
    d = Path(str(tmp_path))
    inp = d / "in.csv"
    with inp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i, t in enumerate(texts(30)):
            w.writerow([f"r{i}", "" if i == 7 else t])
    cfg = make_config({"task": "sentiment", "judge_only": True, "judge": "vader",
                       "batch_size": 4})
    out = d / "out.jsonl"
    run = FileRun(inp, out, cfg, columns={"text": "text"}, id_column="id")
    got = []
    for rec in run.records():
        got.append(rec.id)
        if len(got) == 10:
            break  # a caller that stops: what was yielded is written
    assert run.saved == 10 and len(out.read_text().splitlines()) == 10
    again = classify_file(inp, out, cfg, votes=False, columns={"text": "text"}, id_column="id")
    assert again.skipped == 10 and again.saved == 20 and again.stats is not None
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(30)]
    bad = json.loads(out.read_text().splitlines()[7])
    assert bad["error_kind"] == "input" and bad["label"] is None
