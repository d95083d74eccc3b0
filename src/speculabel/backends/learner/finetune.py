"""Fine-tuning the embedder's last layers on labels: an encoder that imitates its labeller.

Why: a frozen sentence embedding was trained for similarity, not for this labeller's notion of
the classes; unfreezing its last ``unfreeze`` transformer layers (2 of MiniLM's 6 by default) and
training them with a linear head on the labels moves the embedding towards what the labeller
separates.  Bounded cost on a CPU: the head starts from the frozen embedding's logistic head (so
an epoch can only move away from a working classifier), a few epochs, and a wall-clock cap
checked between batches (``max_seconds``).  Nothing is pickled: :meth:`FineTuned.arrays` gives
the trained parameters (the unfrozen layers and the head) as plain arrays, and
:meth:`FineTuned.from_arrays` puts them back on a freshly loaded base model.

Used only after a held-out check (:func:`held_out_check`): the tuned model must beat the frozen
head on labelled items it was not trained on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _load_base(key: str) -> tuple[Any, Any]:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    from speculabel.backends.learner.weights import model_path

    path = model_path(key)
    return AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path))


@dataclass
class FineTuned:
    """A base encoder with its last layers trained, and a linear head over its pooled output."""

    key: str
    tokenizer: Any
    model: Any
    head: Any
    classes: list[str]
    unfreeze: int
    max_len: int = 64
    log: dict[str, Any] = field(default_factory=dict)

    def _trainable(self) -> list[tuple[str, Any]]:
        layers = self.model.encoder.layer
        keep = {f"encoder.layer.{i}." for i in range(len(layers) - self.unfreeze, len(layers))}
        return [(n, p) for n, p in self.model.named_parameters() if any(n.startswith(k) for k in keep)]

    def pooled(self, texts: Sequence[str]) -> Any:
        """Mean-pooled, unit-length sentence vectors (as sentence-transformers computes them)."""
        import torch

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        out = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
        v = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(v, dim=1)

    def predict_proba(self, texts: Sequence[str], batch: int = 256) -> np.ndarray:
        import torch

        self.model.eval()
        outs = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                outs.append(torch.softmax(self.head(self.pooled(texts[i:i + batch])), 1).numpy())
        return np.vstack(outs) if outs else np.zeros((0, len(self.classes)))

    def arrays(self) -> dict[str, np.ndarray]:
        """The trained parameters (unfrozen layers, head), to be stored with ``np.savez``."""
        out = {f"encoder/{n}": p.detach().numpy().copy() for n, p in self._trainable()}
        out["head/weight"] = self.head.weight.detach().numpy().copy()
        out["head/bias"] = self.head.bias.detach().numpy().copy()
        return out

    @classmethod
    def from_arrays(cls, key: str, arrays: dict[str, np.ndarray], classes: Sequence[str],
                    unfreeze: int) -> FineTuned:
        import torch

        tok, model = _load_base(key)
        head = torch.nn.Linear(arrays["head/weight"].shape[1], len(classes))
        ft = cls(key, tok, model, head, list(classes), unfreeze)
        params = dict(ft._trainable())
        with torch.no_grad():
            for name, value in arrays.items():
                if name.startswith("encoder/"):
                    params[name.removeprefix("encoder/")].copy_(torch.from_numpy(value))
            head.weight.copy_(torch.from_numpy(arrays["head/weight"]))
            head.bias.copy_(torch.from_numpy(arrays["head/bias"]))
        return ft


def linear_from_logistic(lr0: Any) -> Any:
    """A torch softmax head equal to a fitted logistic regression (two classes: its one logit
    split as ``-z/2, +z/2``): tuning starts from a working classifier."""
    import torch

    n = len(lr0.classes_)
    head = torch.nn.Linear(lr0.coef_.shape[1], n)
    with torch.no_grad():
        w = lr0.coef_ if n > 2 else np.vstack([-lr0.coef_ / 2, lr0.coef_ / 2])
        b = lr0.intercept_ if n > 2 else np.array([-lr0.intercept_[0] / 2, lr0.intercept_[0] / 2])
        head.weight.copy_(torch.tensor(w, dtype=torch.float32))
        head.bias.copy_(torch.tensor(b, dtype=torch.float32))
    return head


def train_epochs(opt: Any, loss_of: Callable[[np.ndarray], Any], n: int, *, batch: int,
                 epochs: int, seed: int, t0: float, max_seconds: float) -> tuple[int, int, bool]:
    """Shuffled mini-batches of ``0..n-1`` (seeded), one optimiser step each on
    ``loss_of(indices)``, for ``epochs`` or until ``max_seconds`` after ``t0`` (checked between
    batches).  ``(epochs done, steps, stopped by the clock)``."""
    rng = np.random.default_rng(seed)
    done, steps = 0, 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, len(order), batch):
            loss = loss_of(order[i:i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - t0 > max_seconds:
                return done, steps, True
        done += 1
    return done, steps, False


def finetune(texts: Sequence[str], labels: Sequence[str], *, key: str = "minilm",
             unfreeze: int = 2, epochs: int = 3, batch: int = 32, lr: float = 5e-5,
             head_lr: float = 2e-3, C: float = 3.0, max_seconds: float = 120.0,
             seed: int = 0) -> FineTuned:
    """Train the last ``unfreeze`` layers and a linear head on (texts, labels), the head started
    from a logistic regression on the frozen embeddings; stops at ``epochs`` or ``max_seconds``."""
    import torch
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tok, model = _load_base(key)
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(v) for v in labels])
    ft = FineTuned(key, tok, model, None, classes, unfreeze)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for _, p in ft._trainable()]
    for p in trainable:
        p.requires_grad_(True)
    model.eval()
    with torch.inference_mode():
        frozen = np.vstack([ft.pooled(texts[i:i + 256]).numpy() for i in range(0, len(texts), 256)])
    head = linear_from_logistic(LogisticRegression(C=C, max_iter=2000).fit(frozen, np.asarray(labels)))
    ft.head = head
    opt = torch.optim.AdamW([{"params": trainable, "lr": lr},
                             {"params": head.parameters(), "lr": head_lr}], weight_decay=0.01)
    model.train()
    done_epochs, steps, stopped = train_epochs(
        opt, lambda idx: torch.nn.functional.cross_entropy(
            head(ft.pooled([texts[j] for j in idx])), y[idx]),
        len(texts), batch=batch, epochs=epochs, seed=seed, t0=t0, max_seconds=max_seconds)
    model.eval()
    ft.log = {"seconds": round(time.perf_counter() - t0, 1), "epochs": done_epochs, "steps": steps,
              "stopped_by_clock": stopped, "n": len(texts)}
    return ft


def held_out_check(texts: Sequence[str], labels: Sequence[str], *, share: float = 0.2,
                   seed: int = 0, **kw: Any) -> dict[str, Any]:
    """Fine-tune on ``1 - share`` of the labels and compare it with the frozen embedding's
    logistic head on the rest: ``{"tuned": acc, "frozen": acc, "use": tuned > frozen}``."""
    from sklearn.model_selection import train_test_split

    tr, te = train_test_split(np.arange(len(texts)), test_size=share, random_state=seed,
                              stratify=np.asarray(labels))
    ft = finetune([texts[i] for i in tr], [labels[i] for i in tr], seed=seed, **kw)
    truth = np.asarray([labels[i] for i in te])
    tuned = np.asarray(ft.classes)[ft.predict_proba([texts[i] for i in te]).argmax(1)]
    import torch
    from sklearn.linear_model import LogisticRegression

    with torch.inference_mode():  # the frozen head: the base model's pooled output (reloaded)
        base = FineTuned(ft.key, *_load_base(ft.key), None, ft.classes, ft.unfreeze)
        xs = base.pooled([texts[i] for i in tr]).numpy()
        xt = base.pooled([texts[i] for i in te]).numpy()
    frozen = LogisticRegression(C=kw.get("C", 3.0), max_iter=2000).fit(xs, [labels[i] for i in tr])
    acc_t = float((tuned == truth).mean())
    acc_f = float((frozen.predict(xt) == truth).mean())
    return {"tuned": acc_t, "frozen": acc_f, "use": acc_t > acc_f, "log": ft.log}


# ---------------------------------------------------------------------- inside a learner
ENCODER_FILE = "encoder.npz"


class TunedEmbedder:
    """A fine-tuned encoder as a learner's embedder: unit-length pooled vectors, 256 a batch."""

    def __init__(self, tuned: FineTuned, name: str) -> None:
        self.tuned = tuned
        self.name = name

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self.tuned.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 256):
                out.append(self.tuned.pooled(list(texts[i:i + 256])).numpy().astype(np.float32))
        return np.vstack(out) if out else np.zeros((0, 0), dtype=np.float32)


def tune_for(texts: Sequence[str], labels: Sequence[str], frozen: np.ndarray, *, key: str,
             epochs: int, share: float = 0.2, seed: int = 0,
             frozen_fit: Callable[[np.ndarray, np.ndarray], Any] | None = None,
             ) -> tuple[FineTuned | None, dict[str, Any]]:
    """Fine-tune on ``1 - share`` of the labels; keep it only if it beats the head
    ``frozen_fit(x, y)`` fits on the ``frozen`` embeddings (same split; the learner passes its own
    head, cross-validated as it would be without tuning; default a plain logistic regression) on
    the held-out rest.  ``(tuned or None, report)``.

    Deterministic for a given machine (fixed seed, an epoch budget, no clock), as ``calibrate``
    needs: it may fit the same share twice and ship the second fit under the first's certificate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 2 or len(y) < 10:
        return None, {"used": False, "why": "too few labels for a held-out check"}
    tr, te = train_test_split(np.arange(len(y)), test_size=share, random_state=seed, stratify=y)
    ft = finetune([texts[i] for i in tr], list(y[tr]), key=key, epochs=epochs, seed=seed,
                  max_seconds=float("inf"))
    tuned = np.asarray(ft.classes)[ft.predict_proba([texts[i] for i in te]).argmax(1)]
    frozen_head = (frozen_fit(frozen[tr], y[tr]) if frozen_fit is not None
                   else LogisticRegression(C=3.0, max_iter=2000).fit(frozen[tr], y[tr]))
    acc_t = float((tuned == y[te]).mean())
    acc_f = float((frozen_head.predict(frozen[te]) == y[te]).mean())
    report = {"used": acc_t > acc_f, "held_out": len(te), "tuned_accuracy": round(acc_t, 4),
              "frozen_accuracy": round(acc_f, 4), **ft.log}
    if acc_t > acc_f:
        report["held_out_index"] = [int(i) for i in te]
    return (ft if acc_t > acc_f else None), report


def linear_head(tuned: FineTuned, temperature_on: tuple[Sequence[str], Sequence[str]] | None = None
                ) -> Any:
    """The tuned model's own linear head as a fitted scikit-learn logistic regression (softmax of
    ``W x + b`` is what multinomial logistic regression predicts), so it is stored and used like
    any learner head.  With ``temperature_on=(texts, labels)`` (held-out: items the encoder was
    not tuned on), a :class:`.heads.TemperedLogistic` with its temperature fitted there.

    Why not a head fitted anew on the tuned embeddings of the fit labels: the encoder has seen
    those items, so their embeddings separate better than a new item's will; a head or a
    temperature chosen on them is over-confident."""
    from sklearn.linear_model import LogisticRegression

    from speculabel.backends.learner.heads import TemperedLogistic, fit_temperature

    w = tuned.head.weight.detach().numpy().astype(np.float64)
    b = tuned.head.bias.detach().numpy().astype(np.float64)
    head = TemperedLogistic(max_iter=2000) if temperature_on is not None else LogisticRegression(max_iter=2000)
    if len(tuned.classes) == 2:
        head.coef_, head.intercept_ = (w[1] - w[0])[None, :], np.array([b[1] - b[0]])
    else:
        head.coef_, head.intercept_ = w, b
    head.classes_ = np.array(tuned.classes)
    head.n_features_in_ = w.shape[1]
    head.n_iter_ = np.zeros(1, dtype=np.int32)
    if temperature_on is not None:
        texts, labels = temperature_on
        z = TunedEmbedder(tuned, "")(list(texts)) @ w.T + b
        head.temperature_ = fit_temperature(z, np.array([tuned.classes.index(v) for v in labels]))
    return head


def save_encoder(folder: Any, tuned: FineTuned) -> None:
    """The tuned parameters beside the learner's head (plain arrays and JSON: no pickle)."""
    import json
    import os
    from pathlib import Path

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"key": tuned.key, "classes": tuned.classes, "unfreeze": tuned.unfreeze,
            "max_len": tuned.max_len}
    tmp = path / f".encoder.{os.getpid()}.tmp.npz"
    payload: dict[str, Any] = {"__meta__": np.array(json.dumps(meta)), **tuned.arrays()}
    np.savez(tmp, **payload)
    tmp.replace(path / ENCODER_FILE)


def load_encoder(folder: Any) -> FineTuned | None:
    """The tuned encoder kept in ``folder`` (None when it has none), read without unpickling."""
    import json
    import zipfile
    from pathlib import Path

    from speculabel.backends.base import BackendError

    p = Path(folder) / ENCODER_FILE
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"][()]))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise BackendError(f"{p}: not a tuned encoder written by speculabel ({e})") from e
    ft = FineTuned.from_arrays(meta["key"], arrays, meta["classes"], int(meta["unfreeze"]))
    ft.max_len = int(meta.get("max_len", ft.max_len))
    return ft
