"""The learner's acceptor gate: the score a certificate thresholds on many-label tasks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.backends.base import BackendError
from speculabel.backends.learner.backend import LearnerBackend
from speculabel.backends.learner.gate import fit_gate, gate_features, gated
from speculabel.backends.learner.mixhead import MixedHead
from speculabel.backends.learner.persist import LearnerDir
from speculabel.tasks import SENTIMENT, with_labels

needs.module("sklearn", needs.EMBED, module_level=True)

N_CLASSES = 12
LABELS = [f"intent_{i:02d}" for i in range(N_CLASSES)]
TASK = with_labels(SENTIMENT, LABELS)


def _data(n: int, seed: int = 0) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """Overlapping clusters on the unit sphere: a head that is right most of the time, not
    always (so there is something for an acceptor to learn)."""
    centres = np.random.default_rng(99).normal(size=(N_CLASSES, 16))
    rng = np.random.default_rng(seed)
    texts, labels, vecs = [], [], {}
    for i in range(n):
        c = i % N_CLASSES
        v = centres[c] + rng.normal(scale=1.3, size=16)
        t = f"item {seed}-{i}"
        texts.append(t)
        labels.append(LABELS[c])
        vecs[t] = (v / np.linalg.norm(v)).astype(np.float32)
    return texts, labels, vecs


TEXTS, Y, VECS = _data(360)
PROBE, PROBE_Y, PROBE_VECS = _data(240, seed=1)
VECS.update(PROBE_VECS)


def embed(texts: Sequence[str]) -> np.ndarray:
    return np.stack([VECS[t] for t in texts])


def _learner(folder: Path | None = None, **kw: object) -> LearnerBackend:
    lrn = LearnerBackend(embedder=embed, directory=folder, C=3.0, class_weight=None, **kw)
    lrn.check_task(TASK)
    return lrn


def test_gated_keeps_the_label_puts_the_score_on_top_and_stays_a_distribution() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(N_CLASSES, 0.3), size=200)
    score = rng.uniform(0.0, 1.0, size=200)
    q = gated(p, score)
    assert np.array_equal(q.argmax(axis=1), p.argmax(axis=1))
    assert np.allclose(q.sum(axis=1), 1.0)
    assert (q >= 0).all()
    high = score > 1.0 / N_CLASSES + 1e-6
    assert np.allclose(q.max(axis=1)[high], score[high])
    # a score at or below 1/k is raised just above it (the top must stay the top)
    assert (q.max(axis=1)[~high] > 1.0 / N_CLASSES).all()
    # the ranking by the vote's confidence is the ranking by the score
    order = np.argsort(score[high], kind="stable")
    assert (np.diff(q.max(axis=1)[high][order]) >= -1e-12).all()
    # the other labels keep their order (the runner-up stays the runner-up)
    for row_p, row_q in zip(p, q, strict=True):
        others = np.argsort(row_p)[:-1]
        assert (np.diff(row_q[others]) >= -1e-12).all()


def test_the_acceptor_scores_right_answers_above_wrong_ones_and_is_deterministic() -> None:
    x, y = embed(TEXTS), np.array(Y)
    one = MixedHead(C=3.0, knn_weight=0.25, temperature=0.05, gate="acceptor").fit(x, y)
    two = MixedHead(C=3.0, knn_weight=0.25, temperature=0.05, gate="acceptor").fit(x, y)
    for name in ("gate_mean_", "gate_scale_", "gate_coef_", "gate_intercept_"):
        assert np.array_equal(getattr(one, name), getattr(two, name))
    xp = embed(PROBE)
    q = one.predict_proba(xp)
    right = one.classes_[q.argmax(axis=1)] == np.array(PROBE_Y)
    assert 0.3 < right.mean() < 0.98  # something to gate
    conf = q.max(axis=1)
    assert conf[right].mean() > conf[~right].mean()
    # the label is the ungated head's label
    plain = MixedHead(C=3.0, knn_weight=0.25, temperature=0.05).fit(x, y)
    assert np.array_equal(q.argmax(axis=1), plain.predict_proba(xp).argmax(axis=1))


def test_gate_features_are_finite_without_a_memory() -> None:
    p = np.full((3, 4), 0.25)
    f = gate_features(p, p, p, np.zeros((3, 5)), np.zeros((0, 5), np.float32),
                      np.zeros(0, dtype=np.int64))
    assert f.shape == (3, 15) and np.isfinite(f).all()


def test_no_acceptor_when_every_answer_is_right_or_too_few_labels() -> None:
    x = np.eye(4, dtype=np.float32).repeat(6, axis=0)
    y = np.array(["a", "b", "c", "d"]).repeat(6)
    kw = {"C": 30.0, "class_weight": None, "max_iter": 2000, "knn_weight": 0.0,
          "temperature": 0.05}
    assert fit_gate(x, y, **kw) is None  # every out-of-fold answer right
    assert fit_gate(x[:2], y[:2], **kw) is None
    head = MixedHead(C=30.0, gate="acceptor").fit(x, y)
    assert getattr(head, "gate_coef_", None) is None
    assert np.allclose(head.predict_proba(x), head.linear_proba(x))


def test_auto_gates_many_label_tasks_only() -> None:
    assert _learner(gate="auto").gate_now() == "acceptor"
    assert _learner().gate_now() == "none"  # opt-in: the default is the top probability
    few = LearnerBackend(embedder=embed, gate="auto")
    few.check_task(SENTIMENT)
    assert few.gate_now() == "none"
    assert _learner(gate="none").gate_now() == "none"
    with pytest.raises(BackendError, match="gate must be one of"):
        LearnerBackend(embedder=embed, gate="entropy")


def test_a_gated_head_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "lrn"
    lrn = _learner(folder, gate="acceptor")
    lrn.fit(TEXTS, Y)
    lrn.close()
    assert lrn._model.gate == "acceptor" and lrn._model.gate_coef_.shape == (15,)
    p = lrn.predict_proba(PROBE)
    again = LearnerBackend(embedder=embed, directory=folder, gate="none")
    assert again._model.gate == "acceptor"  # the saved head's gate, not the new instance's
    assert np.array_equal(again.predict_proba(PROBE), p)


def test_a_mixed_head_saved_before_the_gate_still_loads_ungated(tmp_path: Path) -> None:
    folder = tmp_path / "lrn"
    lrn = _learner(folder, gate="none")
    lrn.fit(TEXTS, Y)
    lrn.close()
    plain = lrn.predict_proba(PROBE)
    d = LearnerDir(folder)
    old = d.read_model(lrn.new_head)
    # what an earlier version wrote: no gate parameter, no gate arrays
    from speculabel.backends.learner import persist

    arrays, meta = persist.head_state(old)
    meta["params"].pop("gate")
    payload = {"__meta__": np.array(__import__("json").dumps(meta)), **arrays}
    np.savez(folder / persist.HEAD_FILE, **payload)
    again = LearnerBackend(embedder=embed, directory=folder, gate="auto")  # acceptor for new fits
    assert again.gate_now() == "acceptor"
    assert np.array_equal(again.predict_proba(PROBE), plain)
