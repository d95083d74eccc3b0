"""The worker bench's pair side: which cheap worker says best whether two tickets are the same issue.

``python scripts/worker_bench.py --task pairs``: Banking77 "similar ticket" pairs
(:func:`speculabel.io.datasets.banking77_pairs`), each variant fitted on ``n_fit`` pairs of one
split (train by default) and scored, frozen, on ``n_eval`` pairs of another (test), whose queries
it never saw.  The reference is gold (same intent = similar): no judge, so the bench runs in
minutes on a CPU.  Columns as :mod:`.workers` (agreement, ECE, certified coverage at ``target``,
cost per pair), plus the coverage at 0.90, CPU seconds of the fit (the box is shared: wall clock
alone overstates a fit under load), and pairs of the task's default two workers
(``similarity:minilm`` with each learner, both must agree).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from speculabel.bench.workers import DELTA, TARGET, embed_cost, score_pair, score_variant

LABELS = ("not_similar", "similar")
#: name -> (spec, options)
PAIR_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "similarity": ("similarity:minilm", {}),
    "minilm": ("learner:minilm", {}),
    "minilm+temp": ("learner:minilm", {"temperature": True}),
    # siamese fine-tune through the pair features / through the cosine (.pairtune)
    "minilm+ft": ("learner:minilm", {"finetune": True}),
    "minilm+ft+temp": ("learner:minilm", {"finetune": True, "temperature": True}),
    "minilm+ft-cos": ("learner:minilm", {"finetune": True, "objective": "cosine"}),
    # the pair joined as one text "a [SEP] b": MiniLM attends across both (cross-encoder-like)
    "minilm-sep": ("learner:minilm", {"pair_mode": "sep"}),
    "minilm-sep+ft": ("learner:minilm", {"pair_mode": "sep", "finetune": True}),
}
DEFAULT_VARIANTS = ("similarity", "minilm", "minilm+ft", "minilm+ft-cos", "minilm-sep+ft")


def fit_variant(spec: str, options: dict[str, Any], embedder: Any,
                fit_rows: Sequence[tuple[str, str]], fit_labels: Sequence[str],
                eval_rows: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Fit one variant on ``fit_rows`` and return its probabilities on ``eval_rows`` (in
    :data:`LABELS` order), with wall and CPU seconds of the fit and its cost per pair."""
    from speculabel.backends.learner.backend import LearnerBackend
    from speculabel.backends.learner.similarity import SimilarityBackend

    kind = SimilarityBackend if spec.startswith("similarity:") else LearnerBackend
    worker: Any = kind(spec, embedder=embedder, labels=list(LABELS), min_per_class=1, **options)
    t0, c0 = time.perf_counter(), time.process_time()
    worker.fit(list(fit_rows), list(fit_labels))
    out: dict[str, Any] = {"fit_s": time.perf_counter() - t0, "fit_cpu_s": time.process_time() - c0}
    t0 = time.perf_counter()
    out["proba"] = worker.predict_proba(list(eval_rows))
    out["head_ms"] = 1000 * (time.perf_counter() - t0) / max(1, len(eval_rows))
    report = getattr(worker, "tune_report", None)
    if report is not None:
        out["finetune"] = report
    return out


def bench(n_fit: int = 1000, n_eval: int = 800, variants: Sequence[str] = DEFAULT_VARIANTS, *,
          fit_split: str = "train", eval_split: str = "test", seed: int = 0,
          target: float = TARGET, delta: float = DELTA, progress: Any = print) -> dict[str, Any]:
    """The pair table's rows for ``variants`` (names of :data:`PAIR_VARIANTS`)."""
    from speculabel.backends.learner.weights import missing
    from speculabel.io.datasets import banking77_pairs

    unknown = [v for v in variants if v not in PAIR_VARIANTS]
    if unknown:
        raise ValueError(f"unknown pair variant(s) {unknown}; known: {', '.join(PAIR_VARIANTS)}")
    fit, held = (banking77_pairs(n_fit, seed=seed, split=fit_split),
                 banking77_pairs(n_eval, seed=seed, split=eval_split))
    fit_rows = [(it.fields["text_a"], it.fields["text_b"]) for it in fit.items]
    eval_rows = [(it.fields["text_a"], it.fields["text_b"]) for it in held.items]
    problem = missing("minilm")
    if problem:
        progress(f"pair bench skipped: {problem}")
        return {"task": "similar-ticket", "skipped": problem, "rows": [], "pairs": []}
    texts = [t for r in eval_rows for t in r]
    progress(f"embedding {len(texts)} held-out texts with minilm (cold, timed)")
    emb, embed_ms = embed_cost("minilm", texts)
    embed_ms *= 2  # two texts a pair
    emb([t for r in fit_rows for t in r])  # not inside a fit's timing
    rows: list[dict[str, Any]] = []
    probas: dict[str, np.ndarray] = {}
    for name in variants:
        spec, options = PAIR_VARIANTS[name]
        progress(f"{name}: fitting on {len(fit_rows)} pairs")
        got = fit_variant(spec, options, emb, fit_rows, fit.gold, eval_rows)
        probas[name] = proba = got.pop("proba")
        row: dict[str, Any] = {"variant": name, "spec": spec, "options": dict(options)}
        row.update(score_variant(LABELS, proba, held.gold, held.gold, target, delta))
        row["coverage_90"] = score_variant(LABELS, proba, held.gold, held.gold, 0.90,
                                           delta)["coverage"]
        row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in got.items()})
        tuned = bool((got.get("finetune") or {}).get("used"))
        e_ms = 0.0 if tuned else embed_ms  # a tuned encoder embeds inside head_ms
        row["ms_per_item"] = round(e_ms + float(got["head_ms"]), 3)
        rows.append(row)
        progress(f"{name}: agreement {row['agreement']}, coverage {row['coverage']} (0.85) "
                 f"{row['coverage_90']} (0.90), fit {row['fit_s']:.1f} s "
                 f"({row['fit_cpu_s']:.1f} CPU s) {got.get('finetune', '')}")
    pairs = []
    if "similarity" in probas:  # the task's default two workers: similarity + a learner
        for name, proba in probas.items():
            if name != "similarity":
                pairs.append({"variant": f"similarity&{name}",
                              **score_pair(LABELS, probas["similarity"], proba, held.gold,
                                           held.gold, target, delta)})
    return {"task": "similar-ticket", "reference": "gold", "rows": rows, "pairs": pairs,
            "fit": {"source": f"banking77-pairs:{fit_split}:{seed}", "n": len(fit_rows)},
            "held_out": {"source": f"banking77-pairs:{eval_split}:{seed}", "n": len(eval_rows)},
            "target": target, "delta": delta, "scope": "dataset"}


COLUMNS = ("variant", "agreement", "ece", "coverage", "coverage_90", "ms_per_item", "fit_s",
           "fit_cpu_s")


def table(report: dict[str, Any]) -> str:
    """The report's rows, then its pairs, as fixed-width text."""
    lines = [" ".join(f"{c:>16}" if i == 0 else f"{c:>11}" for i, c in enumerate(COLUMNS))]
    for r in report["rows"]:
        lines.append(" ".join([f"{r['variant']:>16}", *(f"{r.get(c)!s:>11}" for c in COLUMNS[1:])]))
    for p in report.get("pairs", []):
        lines.append(f"{p['variant']:>28}: decided {p['decided']}, agreement {p['agreement']}, "
                     f"coverage {p['coverage']}")
    return "\n".join(lines)
