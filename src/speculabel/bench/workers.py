"""Which cheap learning worker imitates its labeller best, per unit of cost (``make bench-workers``).

Each worker variant (an embedder and the learner's options) is fitted on ``n_fit`` labelled items
and scored, frozen, on ``n_eval`` others it never saw and nothing was tuned on.  Per variant:

* ``agreement``: share of held-out items where its label equals the *reference* (the judge's
  labels when given, else gold: the table says which);
* ``accuracy``: against gold;
* ``ece``: expected calibration error of its confidence against the reference (15 bins): how far
  "90 % sure" is from being right 90 % of the time;
* ``coverage``: the share of held-out items the worker may decide, certified by
  :func:`speculabel.certify.threshold.calibrate_threshold` (scope ``dataset``: whole-data
  agreement at least ``target`` with probability ``1 - delta``, items under the threshold going
  to the reference labeller), with the held-out items as the calibration set;
* ``embed_ms`` / ``head_ms`` / ``ms_per_item``: the embedder's cost per text, cold, in batches of
  256, and the head's (with any lexicon scores) once the embeddings are cached; ``fit_s``: the
  fit on ``n_fit`` labels with its cross-validation.

Costs are wall clock on whatever machine runs it (the 2-core box is shared: compare within one
run only).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: name -> (spec, learner options); "vader" is the lexicon alone, for scale
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vader": ("vader", {}),
    "minilm": ("learner:minilm", {}),
    "minilm+temp": ("learner:minilm", {"temperature": True}),
    "minilm+lex": ("learner:minilm", {"lexicon": True}),
    "minilm+lex+temp": ("learner:minilm", {"lexicon": True, "temperature": True}),
    "minilm-knn": ("learner:minilm", {"head": "knn"}),
    "mpnet": ("learner:mpnet", {}),
    "mpnet+lex+temp": ("learner:mpnet", {"lexicon": True, "temperature": True}),
    "mpnet-knn": ("learner:mpnet", {"head": "knn"}),
    # MiniLM's last two layers fine-tuned (speculabel.backends.learner.finetune); its cost per
    # item is a whole forward pass of the tuned model (head_ms), no shared embedding
    "minilm-ft": ("finetune:minilm", {"unfreeze": 2, "epochs": 3, "max_seconds": 120.0}),
    # the learner with finetune=true: tuned on 80 % of its labels for 2 epochs, used only if it
    # beats the frozen embedding on the other 20 %, with the tuned model's own head (and its
    # temperature fitted on that held-out 20 %)
    "minilm+ft": ("learner:minilm", {"finetune": True}),
    "minilm+ft+temp": ("learner:minilm", {"finetune": True, "temperature": True}),
}
TARGET = 0.85
DELTA = 0.1


def ece(conf: np.ndarray, right: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the bin-weighted gap between confidence and accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(float(conf[m].mean()) - float(right[m].mean()))
    return total


def score_variant(labels: Sequence[str], proba: np.ndarray, reference: Sequence[str],
                  gold: Sequence[str], target: float = TARGET, delta: float = DELTA
                  ) -> dict[str, Any]:
    """Agreement, accuracy, calibration and certified coverage of probabilities ``proba``
    (columns in ``labels`` order) against ``reference`` and ``gold``."""
    from speculabel.certify.threshold import calibrate_threshold

    pred = np.array([labels[int(i)] for i in proba.argmax(axis=1)])
    conf = proba.max(axis=1)
    agree = pred == np.asarray(reference)
    cal = calibrate_threshold(conf, agree, target, delta, scope="dataset")
    return {
        "agreement": round(float(agree.mean()), 4),
        "accuracy": round(float((pred == np.asarray(gold)).mean()), 4),
        "ece": round(float(ece(conf, agree)), 4),
        "coverage": round(float(cal.coverage), 4) if cal.feasible else 0.0,
        "threshold": cal.threshold,
        "feasible": bool(cal.feasible),
        "pred_counts": {lab: int((pred == lab).sum()) for lab in labels},
    }


def score_pair(labels: Sequence[str], pa: np.ndarray, pb: np.ndarray, reference: Sequence[str],
               gold: Sequence[str], target: float = TARGET, delta: float = DELTA) -> dict[str, Any]:
    """Two workers under the default majority rule of two (both must name the same label; the
    support is the mean of their probabilities for it): the share they decide, their agreement
    with the reference there, and the coverage certified for whole-data agreement."""
    from speculabel.certify.threshold import calibrate_threshold

    a, b = pa.argmax(axis=1), pb.argmax(axis=1)
    both = a == b
    rows = np.arange(len(a))
    support = np.where(both, (pa[rows, a] + pb[rows, a]) / 2, -np.inf)
    pred = np.array([labels[int(i)] for i in a])
    agree = both & (pred == np.asarray(reference))
    cal = calibrate_threshold(support, agree, target, delta, scope="dataset")
    return {
        "decided": round(float(both.mean()), 4),
        "agreement": round(float(agree[both].mean()), 4) if both.any() else None,
        "accuracy": round(float((pred == np.asarray(gold))[both].mean()), 4) if both.any() else None,
        "coverage": round(float(cal.coverage), 4) if cal.feasible else 0.0,
        "threshold": cal.threshold,
        "feasible": bool(cal.feasible),
    }


def judge_labels(items: Sequence[Any], spec: str, votes: Any, *,
                 progress: Any = print) -> tuple[list[str | None], float]:
    """The judge ``spec``'s label of each item (``None`` where it abstained) and its mean wall
    clock per item, from the vote store at ``votes`` where stored, else computed and stored batch
    by batch (an interrupted bench loses at most one batch of judge calls)."""
    from speculabel.certify.votes import collect_votes
    from speculabel.io.votes import VoteStore
    from speculabel.tasks import SENTIMENT

    def note(model: str, done: int, total: int) -> None:
        if done == total or done % 80 == 0:
            progress(f"{model}: {done}/{total} judge votes")

    with VoteStore(votes) as store:
        got = collect_votes(SENTIMENT, list(items), [spec], store, progress=note)[spec]
    ms = [1000 * v.latency_s for v in got if v.label is not None]
    return [v.label for v in got], (float(np.mean(ms)) if ms else 0.0)


def speedup(ms_per_item: float, coverage: float, judge_ms: float) -> float:
    """The judge's cost per item over the cascade's: the worker on every item, the judge on the
    share it may not decide (``1 - coverage``)."""
    return judge_ms / (ms_per_item + (1.0 - coverage) * judge_ms)


def embed_cost(key: str, texts: Sequence[str], batch: int = 256) -> tuple[Any, float]:
    """The shared embedder ``key`` (loaded first), and its cold cost in ms per text."""
    from speculabel.backends.learner.embed import shared_embedder

    emb = shared_embedder(batch_size=batch, model=key)
    emb(["warm up: the model loads here, not inside the timing"])
    emb.forget()
    t0 = time.perf_counter()
    emb(list(texts))
    return emb, 1000 * (time.perf_counter() - t0) / max(1, len(texts))


def run_variant(name: str, spec: str, options: Mapping[str, Any], embedder: Any,
                fit_texts: Sequence[str], fit_labels: Sequence[str],
                eval_texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Fit one variant and return its probabilities on the held-out texts, with its costs."""
    if spec == "vader":
        from speculabel.backends.lexicon import VaderBackend
        from speculabel.records import Item
        from speculabel.tasks import SENTIMENT

        vader = VaderBackend()
        items = [Item(id=str(i), fields={"text": t}) for i, t in enumerate(eval_texts)]
        t0 = time.perf_counter()
        votes = vader.score(SENTIMENT, items)
        head_ms = 1000 * (time.perf_counter() - t0) / max(1, len(items))
        proba = np.array([[v.probs.get(lab, 0.0) for lab in labels] for v in votes])
        return {"proba": proba, "fit_s": 0.0, "head_ms": head_ms}
    if spec.startswith("finetune:"):
        from speculabel.backends.learner.finetune import finetune

        t0 = time.perf_counter()
        ft = finetune(list(fit_texts), list(fit_labels), key=spec.partition(":")[2], **options)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        p = ft.predict_proba(list(eval_texts))
        head_ms = 1000 * (time.perf_counter() - t0) / max(1, len(eval_texts))
        proba = np.zeros((len(eval_texts), len(labels)))
        for j, lab in enumerate(ft.classes):
            proba[:, list(labels).index(lab)] = p[:, j]
        return {"proba": proba, "fit_s": fit_s, "head_ms": head_ms, "finetune": ft.log}
    from speculabel.backends.learner.backend import LearnerBackend

    worker = LearnerBackend(spec, embedder=embedder, labels=list(labels), min_per_class=1,
                            **dict(options))
    t0 = time.perf_counter()
    worker.fit(list(fit_texts), list(fit_labels))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = worker.predict_proba(list(eval_texts))
    head_ms = 1000 * (time.perf_counter() - t0) / max(1, len(eval_texts))
    out: dict[str, Any] = {"proba": proba, "fit_s": fit_s, "head_ms": head_ms}
    t = getattr(worker._model, "temperature_", None)
    if t is not None:
        out["temperature"] = round(float(t), 3)
    if worker.tune_report is not None:
        out["finetune"] = worker.tune_report
    if worker.choice is not None:
        out["C"], out["class_weight"] = worker.choice.C, worker.choice.class_weight
    return out


def bench(fit: Any, held: Any, variants: Sequence[str], *, reference: Sequence[str] | None = None,
          fit_reference: Sequence[str] | None = None, target: float = TARGET,
          delta: float = DELTA, labels: Sequence[str] = ("negative", "neutral", "positive"),
          judge_ms: float = 0.0, progress: Any = print) -> dict[str, Any]:
    """The table's rows for ``variants`` (names of :data:`VARIANTS`), fitted on ``fit``'s items
    and scored on ``held``'s (both :class:`speculabel.io.datasets.Labelled`).  ``reference``
    and ``fit_reference``: the labeller's labels of the held-out and fit items (default: gold).
    ``judge_ms``: the judge's cost per item; when positive, each row and pair gets the
    ``speedup`` of a cascade that sends the judge what the worker may not decide.
    """
    from speculabel.backends.learner.weights import missing

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown worker variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    fit_texts = [it.fields["text"] for it in fit.items]
    eval_texts = [it.fields["text"] for it in held.items]
    ref = list(reference) if reference is not None else list(held.gold)
    fit_ref = list(fit_reference) if fit_reference is not None else list(fit.gold)
    embedders: dict[str, tuple[Any, float]] = {}
    rows: list[dict[str, Any]] = []
    probas: dict[str, np.ndarray] = {}
    for name in variants:
        spec, options = VARIANTS[name]
        row: dict[str, Any] = {"variant": name, "spec": spec, "options": dict(options)}
        key = spec.partition(":")[2]
        embed_ms = 0.0
        emb = None
        if key and spec.startswith("finetune:"):
            problem = missing(key)
            if problem:
                progress(f"{name}: skipped, {problem}")
                rows.append({**row, "skipped": problem})
                continue
        elif key:
            problem = missing(key)
            if problem:
                progress(f"{name}: skipped, {problem}")
                rows.append({**row, "skipped": problem})
                continue
            if key not in embedders:
                progress(f"embedding {len(eval_texts)} held-out texts with {key} (cold, timed)")
                embedders[key] = embed_cost(key, eval_texts)
                embedders[key][0](fit_texts)  # not inside a fit's timing
            emb, embed_ms = embedders[key]
        got = run_variant(name, spec, options, emb, fit_texts, fit_ref, eval_texts, labels)
        proba = got.pop("proba")
        probas[name] = proba
        row.update(score_variant(labels, proba, ref, held.gold, target, delta))
        row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in got.items()})
        if (got.get("finetune") or {}).get("used"):
            embed_ms = 0.0  # the tuned encoder embeds the held-out texts inside head_ms
        row["embed_ms"] = round(embed_ms, 3)
        row["ms_per_item"] = round(embed_ms + float(got["head_ms"]), 3)
        if judge_ms > 0:
            row["speedup"] = round(speedup(row["ms_per_item"], row["coverage"], judge_ms), 2)
        rows.append(row)
        progress(table({"rows": [row]}, header=False))
    pairs = []
    cost = {r["variant"]: r["ms_per_item"] for r in rows if "ms_per_item" in r}
    if "vader" in probas:  # the sentiment task's default pair: vader + a learner
        for name, proba in probas.items():
            if name != "vader":
                pair = {"variant": f"vader&{name}",
                        **score_pair(labels, probas["vader"], proba, ref, held.gold, target, delta),
                        "ms_per_item": round(cost["vader"] + cost[name], 3)}
                if judge_ms > 0:
                    pair["speedup"] = round(speedup(pair["ms_per_item"], pair["coverage"],
                                                    judge_ms), 2)
                pairs.append(pair)
    return {"task": "sentiment", "pairs": pairs, "judge_ms": round(judge_ms, 1),
            "reference": "judge" if reference is not None else "gold",
            "fit": {"source": fit.name, "n": len(fit)},
            "held_out": {"source": held.name, "n": len(held)},
            "target": target, "delta": delta, "scope": "dataset", "rows": rows}


COLUMNS = ("variant", "agreement", "accuracy", "ece", "coverage", "ms_per_item", "embed_ms",
           "head_ms", "fit_s", "speedup")


PAIR_COLUMNS = ("variant", "decided", "agreement", "accuracy", "coverage", "ms_per_item",
                "speedup")


def pair_table(report: Mapping[str, Any]) -> str:
    """The report's pairs (vader + each learner, both must agree) as a fixed-width table."""
    lines = [" ".join(f"{c:>22}" if i == 0 else f"{c:>11}" for i, c in enumerate(PAIR_COLUMNS))]
    for r in report.get("pairs", []):
        lines.append(" ".join([f"{r['variant']:>22}", *(f"{r.get(c)!s:>11}" for c in PAIR_COLUMNS[1:])]))
    return "\n".join(lines)


def table(report: Mapping[str, Any], header: bool = True) -> str:
    """The report's rows as a fixed-width text table."""
    lines = []
    if header:
        lines.append(" ".join(f"{c:>16}" if i == 0 else f"{c:>11}" for i, c in enumerate(COLUMNS)))
    for r in report["rows"]:
        if "skipped" in r:
            lines.append(f"{r['variant']:>16} skipped: {r['skipped']}")
            continue
        cells = [f"{r['variant']:>16}"]
        for c in COLUMNS[1:]:
            v = r.get(c)
            cells.append(f"{v:>11.3f}" if isinstance(v, float) else f"{v!s:>11}")
        lines.append(" ".join(cells))
    return "\n".join(lines)
