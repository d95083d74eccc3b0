"""A learning worker's fitted head is stored as arrays and JSON: loading a folder runs no code."""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.backends.base import BackendError
from speculabel.backends.learner.backend import LearnerBackend
from speculabel.backends.learner.persist import HEAD_FILE, LEGACY_HEAD
from speculabel.backends.learner.similarity import SimilarityBackend
from speculabel.records import Item
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET

needs.module("sklearn", needs.EMBED, module_level=True)

WORDS = {
    "positive": ["great", "love", "happy", "wonderful", "amazing", "best"],
    "negative": ["awful", "hate", "sad", "terrible", "worst", "broken"],
    "neutral": ["table", "monday", "report", "bus", "meeting", "street"],
}


def embed(texts: Sequence[str]) -> np.ndarray:
    """A deterministic bag-of-words embedding (a stand-in for MiniLM)."""
    out = np.zeros((len(texts), 32), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            h = int(hashlib.md5(w.encode()).hexdigest(), 16)
            out[i, h % 32] += 1.0 if (h >> 8) % 2 else -1.0
        out[i] /= max(float(np.linalg.norm(out[i])), 1e-9)
    return out


def _texts(n: int) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for i in range(n):
        lab = list(WORDS)[i % 3]
        texts.append(f"{WORDS[lab][i % 6]} {WORDS[lab][(i + 1) % 6]} {WORDS['neutral'][i % 6]} #{i}")
        labels.append(lab)
    return texts, labels


def _fitted(folder: Path) -> LearnerBackend:
    lrn = LearnerBackend(embedder=embed, directory=folder, min_per_class=2, C=3.0,
                         class_weight="balanced")
    texts, labels = _texts(30)
    lrn.fit(texts, labels)
    lrn.check_task(SENTIMENT)
    lrn.close()
    return lrn


def test_a_saved_head_gives_identical_probabilities(tmp_path: Path) -> None:
    folder = tmp_path / "lrn"
    before = _fitted(folder)
    probe = ["great love monday", "awful broken bus", "table street", "best worst report"]
    assert (folder / HEAD_FILE).exists() and not (folder / LEGACY_HEAD).exists()
    again = LearnerBackend(embedder=embed, directory=folder)
    assert np.array_equal(again.predict_proba(probe), before.predict_proba(probe))
    assert again.fingerprint() == before.fingerprint()
    # the parameters it was fitted with come back too, not those of the new instance
    assert again._model.get_params()["C"] == 3.0
    assert again._model.get_params()["class_weight"] == "balanced"
    votes = again.score(SENTIMENT, [Item("1", {"text": probe[0]})])
    assert votes[0].probs == before.score(SENTIMENT, [Item("1", {"text": probe[0]})])[0].probs


def test_a_saved_similarity_head_gives_identical_probabilities(tmp_path: Path) -> None:
    folder = tmp_path / "sim"
    sim = SimilarityBackend(embedder=embed, directory=folder, min_per_class=2)
    pairs = [(f"{a} card", f"{a} card please") for a in WORDS["positive"]]
    pairs += [(f"{a} card", f"{b} transfer") for a, b in zip(WORDS["negative"], WORDS["neutral"],
                                                               strict=True)]
    labels = ["similar"] * 6 + ["not_similar"] * 6
    sim.fit(pairs, labels)
    sim.check_task(SIMILAR_TICKET)
    sim.close()
    again = SimilarityBackend(embedder=embed, directory=folder)
    assert np.array_equal(again.predict_proba(pairs), sim.predict_proba(pairs))


def test_an_old_pickled_head_is_refused_saying_how_to_refit(tmp_path: Path) -> None:
    folder = tmp_path / "out.jsonl.learner-minilm"
    fitted = _fitted(folder)
    (folder / HEAD_FILE).unlink()
    (folder / LEGACY_HEAD).write_bytes(pickle.dumps(fitted._model))
    with pytest.raises(BackendError) as e:
        LearnerBackend(embedder=embed, directory=folder)
    msg = str(e.value)
    assert str(folder / LEGACY_HEAD) in msg and "pickle" in msg
    assert "speculabel calibrate" in msg and f"delete the folder {folder}" in msg


class _Boom:
    """Unpickling this creates the file ``marker``: the proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_a_crafted_pickle_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Boom(marker))
    pickle.loads(payload)  # the payload works: loading it would run code
    assert marker.exists()
    marker.unlink()

    # as the legacy head
    folder = tmp_path / "legacy"
    _fitted(folder)
    (folder / HEAD_FILE).unlink()
    (folder / LEGACY_HEAD).write_bytes(payload)
    with pytest.raises(BackendError, match="not loaded"):
        LearnerBackend(embedder=embed, directory=folder)
    assert not marker.exists()

    # inside head.npz, as an object array (np.save pickles those)
    folder = tmp_path / "npz"
    _fitted(folder)
    with np.load(folder / HEAD_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["coef_"] = np.array([_Boom(marker)], dtype=object)  # np.savez pickles object arrays
    np.savez(folder / HEAD_FILE, **arrays)
    with pytest.raises(BackendError, match="not a learner head written by speculabel"):
        LearnerBackend(embedder=embed, directory=folder)
    assert not marker.exists()

    # as the embedding cache
    folder = tmp_path / "emb"
    _fitted(folder)
    buf = io.BytesIO()
    np.savez(buf, keys=np.array(["k"]), vectors=np.array([_Boom(marker)], dtype=object))
    (folder / "embeddings.npz").write_bytes(buf.getvalue())
    with pytest.raises(BackendError, match="not an embedding cache"):
        LearnerBackend(embedder=embed, directory=folder)
    assert not marker.exists()


def test_a_head_of_another_class_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "lrn"
    _fitted(folder)

    class Other(LearnerBackend):
        def new_head(self) -> object:
            from sklearn.linear_model import RidgeClassifier

            return RidgeClassifier()

    with pytest.raises(BackendError, match="MixedHead head"):
        Other(embedder=embed, directory=folder)


def test_a_head_with_a_neighbour_vote_round_trips(tmp_path: Path) -> None:
    from speculabel.backends.learner.select import Choice

    folder = tmp_path / "lrn"
    lrn = LearnerBackend(embedder=embed, directory=folder, C=3.0, class_weight=None)
    lrn.choice = Choice(3.0, None, {}, 3, knn_weight=0.5, temperature=0.02)
    texts, labels = _texts(30)
    lrn.fit(texts, labels)
    probe = ["great love monday", "awful broken bus", "table street"]
    p = lrn.predict_proba(probe)
    assert lrn._model.knn_weight == 0.5 and len(lrn._model.memory_) == 30
    assert np.allclose(p.sum(axis=1), 1.0)
    lrn.close()
    again = LearnerBackend(embedder=embed, directory=folder)
    assert np.array_equal(again.predict_proba(probe), p)
    # the vote counts: the same head without it gives other probabilities
    plain = lrn._model.linear_proba(lrn.features([(t,) for t in probe]))
    assert not np.allclose(plain, p)


def test_a_plain_logistic_head_of_an_earlier_version_still_loads(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from speculabel.backends.learner.persist import LearnerDir

    folder = tmp_path / "lrn"
    lrn = _fitted(folder)
    texts, labels = _texts(30)
    old = LogisticRegression(C=3.0, max_iter=2000).fit(lrn.features([(t,) for t in texts]),
                                                       labels)
    LearnerDir(folder).write_model(old)
    again = LearnerBackend(embedder=embed, directory=folder)
    assert isinstance(again._model, LogisticRegression)
    probe = ["great love monday", "awful broken bus"]
    assert np.allclose(again.predict_proba(probe),
                       old.predict_proba(again.features([(t,) for t in probe])))
