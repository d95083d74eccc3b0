"""``speculabel bench``: the paper's measurements on real data, computed from stored votes.

Three steps, each usable alone: :func:`~speculabel.bench.run.run_models` (every model's vote
into the vote store), :func:`~speculabel.bench.analyse.analyse` (every number, from the stored
votes alone) and :func:`~speculabel.bench.measure.measure` (the real cascade and the judge alone,
timed on the same items).  A bench writes ``bench.json`` (the manifest) into its output folder
so that :func:`report_from_store` can redo the analysis and the report without any model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.bench.analyse import analyse, attach_streams, to_measure
from speculabel.bench.manifest import DEFAULT_THRESHOLDS, Manifest, vote_table
from speculabel.bench.measure import environment, measure, measure_signature, previous_measured
from speculabel.bench.metrics import clean
from speculabel.bench.run import Loader, ModelRun, Say, _load, _quiet, run_models
from speculabel.bench.simulate import VoteTable
from speculabel.io.paths import default_votes_path
from speculabel.io.votes import VoteStore, item_key
from speculabel.records import Item, Vote
from speculabel.tasks import Task


@dataclass
class BenchResult:
    out_dir: Path
    manifest: Manifest
    runs: list[ModelRun]
    analysis: dict[str, Any]
    files: dict[str, Path]


LEARNED = "learned_votes.json"


def run_bench(
    task: Task,
    items: Sequence[Item],
    gold: Sequence[str | None] | None,
    specs: Sequence[str],
    out_dir: Path,
    *,
    judge: str | None = None,
    store_path: Path | None = None,
    dataset: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    measure_items: int = 100,
    fit_items: int | None = None,
    fit_from: str | None = None,
    delta: float = 0.1,
    splits: int = 100,
    seed: int = 0,
    loader: Loader = _load,
    backends: Mapping[str, Backend] | None = None,
    progress: bool = True,
    plots: bool = True,
    interleave: bool = True,
    stream: Sequence[Path] | Path | None = None,
    remeasure: bool = False,
    say: Say = _quiet,
) -> BenchResult:
    """Run the models into the store, analyse, certify, measure, write the report.

    Workers that learn (``learner:minilm``, ``similarity:minilm``) are fitted on the fit share
    (``fit_items``, default a fifth of the items up to 300) and enter the certified section
    only (:mod:`speculabel.bench.certified`).  ``fit_from`` (a data set spec) takes the fit share
    from other items of that data set instead (never a bench item; their judge labels are
    computed once and stored), so all the bench items are certified on or measured on.
    ``measure_items`` = 0 skips the measured runs, which run on held-out items; those of an
    earlier bench in ``out_dir`` with the same models, items and configurations are reused (a
    rerun makes no model call), unless ``remeasure``.
    """
    from speculabel.bench.certified import three_way_split
    from speculabel.certify.workflow import learning
    from speculabel.report import write_report

    specs = list(dict.fromkeys(specs))
    judge = judge or specs[-1]
    if judge not in specs:
        raise ValueError(f"judge {judge!r} must be one of --models ({', '.join(specs)})")
    learners = [s for s in specs if learning(s)]
    if judge in learners:
        raise ValueError(f"the judge cannot be a worker that learns: {judge}")
    stored = [s for s in specs if s not in learners]
    if len(specs) < 3:
        raise ValueError("a bench needs at least three models: two workers and a judge")
    plain = [s for s in stored if s != judge]
    if len(plain) < 2:
        raise ValueError(
            "a bench needs at least two workers that do not learn (an LLM, vader, a rule) "
            "besides the judge, for its plain rule sweep; "
            f"got {', '.join(plain) or 'none'} (workers that learn: {', '.join(learners)})"
        )
    if gold is not None and len(gold) != len(items):
        raise ValueError(f"{len(gold)} gold labels for {len(items)} items")
    store_path = store_path or default_votes_path()
    out_dir.mkdir(parents=True, exist_ok=True)
    n_fit = min(300, len(items) // 5) if fit_items is None else fit_items
    outside = fit_from is not None
    with VoteStore(store_path) as store:
        runs = run_models(task, items, stored, store, batch_size=batch_size, backends=backends,
                          loader=loader, progress=progress, interleave=interleave, say=say)
        manifest = Manifest(
            task=task.name,
            task_fingerprint=task.fingerprint(),
            labels=task.label_names,
            dataset={**(dataset or {}), "interleaved": interleave},
            item_ids=[it.id for it in items],
            item_keys=[item_key(task, it) for it in items],
            gold=list(gold) if gold is not None else None,
            models=[asdict(r) for r in runs],
            judge=judge,
            store=str(store_path),
            thresholds=list(thresholds),
            learners=learners,
            split=three_way_split(len(items), 0 if outside else n_fit, seed),
            fit_from=fit_from,
            fit_items=n_fit,
        )
        manifest.save(out_dir)
        table, _ = vote_table(store, manifest)
    learned: dict[str, dict[str, list[Vote]]] = {}
    if learners:
        from speculabel.bench.learned import fit_and_score

        if fit_from is not None:
            with VoteStore(store_path) as store:
                fit_set, refs = _outside_fit(task, fit_from, n_fit, manifest, judge, store,
                                             gold is not None, say)
        else:
            fit_set = [items[i] for i in manifest.split["fit"]]
            refs = {"judge": [table.labels(judge)[i] for i in manifest.split["fit"]]}
            if gold is not None:
                refs["gold"] = [gold[i] for i in manifest.split["fit"]]
        learned, costs = fit_and_score(task, items, fit_set, refs, learners, out_dir,
                                       fit=manifest.split["fit"], say=say)
        (out_dir / LEARNED).write_text(json.dumps({
            "costs": costs,
            "votes": {ref: {m: [v.to_json() for v in vs] for m, vs in by.items()}
                      for ref, by in learned.items()},
        }), encoding="utf-8")
    analysis = _analyse(table, manifest, learned, delta, splits, seed)
    analysis["bench"] = _bench_info(manifest, runs)
    attach_streams(analysis, stream)
    if measure_items > 0:
        _measure(analysis, task, items, manifest, table, learned, out_dir, measure_items,
                 loader, backends, batch_size, remeasure, say)
    else:
        analysis["measured"] = {"skipped": "measured runs turned off (--measure-items 0)",
                                "runs": []}
    files = write_report(analysis, out_dir, plots=plots)
    return BenchResult(out_dir, manifest, runs, analysis, files)


def outside_items(task: Task, spec: str, n: int, exclude: set[str]
                  ) -> list[tuple[Item, str]]:
    """The first ``n`` items of data set ``spec`` (with gold) whose key is not in ``exclude``:
    the fit share ``--fit-from`` takes, and the demo refits from."""
    from speculabel.io.datasets import from_spec

    data = from_spec(spec)
    pool = [(it, g) for it, g in zip(data.items, data.gold, strict=True)
            if item_key(task, it) not in exclude][:n]
    if len(pool) < n:
        raise ValueError(f"{spec} has only {len(pool)} items besides the bench items; "
                         f"--fit-items {n} needs more")
    return pool


def _outside_fit(task: Task, spec: str, n: int, manifest: Manifest, judge: str,
                 store: VoteStore, with_gold: bool, say: Say
                 ) -> tuple[list[Item], dict[str, Sequence[str | None]]]:
    """The first ``n`` items of data set ``spec`` that are not bench items, with their judge
    labels (computed where the store lacks them) and gold labels."""
    from speculabel.certify.votes import collect_votes

    pool = outside_items(task, spec, n, set(manifest.item_keys))
    fit = [it for it, _ in pool]
    say(f"fit share: {len(fit)} items of {spec} outside the bench; judge labels from the store")
    labels = collect_votes(task, fit, [judge], store)[judge]
    refs: dict[str, Sequence[str | None]] = {"judge": [v.label for v in labels]}
    if with_gold:
        refs["gold"] = [g for _, g in pool]
    return fit, refs


def _analyse(table: VoteTable, manifest: Manifest, learned: Mapping[str, Mapping[str, list[Vote]]],
             delta: float, splits: int, seed: int, judge: str | None = None,
             thresholds: Sequence[float] | None = None) -> dict[str, Any]:
    from speculabel.bench.certified import certified

    j = judge or manifest.judge
    analysis = analyse(table, j, gold=manifest.gold, labels=manifest.labels,
                       thresholds=thresholds or manifest.thresholds)
    # every fitted variant (on the judge's labels, and on gold: '+gold') may serve any target:
    # what matters for the certificate is that the fit share is used for nothing else
    merged = {m: vs for by in learned.values() for m, vs in by.items()}
    full = VoteTable({**table.votes, **merged}, dict(table.cpu_s))
    tables = {"judge": full, "gold": full}
    workers = {ref: [m for m in full.models if m != j] for ref in tables}
    split = manifest.split or {"fit": [], "certify": list(range(0, table.n, 2)),
                               "held": list(range(1, table.n, 2))}
    source = None
    if manifest.fit_from:
        source = f"{manifest.fit_items} items of {manifest.fit_from} outside the bench"
    analysis["certified"] = certified(
        tables, j, workers, split, gold=manifest.gold, labels=manifest.labels, delta=delta,
        splits=splits, seed=seed, fit_source=source)
    return analysis


def _measure(analysis: dict[str, Any], task: Task, items: Sequence[Item], manifest: Manifest,
             table: VoteTable, learned: Mapping[str, Mapping[str, list[Vote]]], out_dir: Path,
             measure_items: int, loader: Loader, backends: Mapping[str, Backend] | None,
             batch_size: int, remeasure: bool, say: Say) -> None:
    """The measured runs, on held-out items, reused when their signature is unchanged."""
    from speculabel.bench.learned import loader_for

    held = (manifest.split or {}).get("held") or list(range(len(items)))
    idx = held[:measure_items]
    merged = {m: vs for by in learned.values() for m, vs in by.items()}
    full = VoteTable({**table.votes, **merged}, dict(table.cpu_s))
    sub = full.subset(idx)
    sub_gold = [manifest.gold[i] for i in idx] if manifest.gold is not None else None
    configs = to_measure(analysis)
    sig = measure_signature(manifest, configs, idx)
    prev = None if remeasure else previous_measured(out_dir, sig)
    try:
        if prev is not None:
            say("measured runs: reusing those of the previous bench (same models, items and "
                "configurations; --remeasure to time them again)")
            analysis["measured"] = prev
        else:
            analysis["measured"] = measure(
                task, [items[i] for i in idx], configs, sub, gold=sub_gold,
                labels=task.label_names, loader=loader_for(out_dir, loader), backends=backends,
                batch_size=batch_size, say=say,
            )
            analysis["measured"]["signature"] = sig
        analysis["measured"]["selection"] = analysis["selection"]
    except ImportError as e:
        analysis["measured"] = {"skipped": f"the cascade is not available: {e}", "runs": []}
    except (BackendError, RuntimeError, ValueError) as e:
        # the stored votes and the computed report stay valid; say why nothing was measured
        say(f"measured runs failed: {type(e).__name__}: {e}")
        analysis["measured"] = {"skipped": f"measured runs failed: {type(e).__name__}: {e}",
                                "runs": []}


def _bench_info(manifest: Manifest, runs: Sequence[ModelRun] | None) -> dict[str, Any]:
    return clean({
        "environment": environment(),
        "task": manifest.task,
        "task_fingerprint": manifest.task_fingerprint,
        "dataset": manifest.dataset,
        "items": len(manifest.item_ids),
        "models": manifest.models if runs is None else [asdict(r) for r in runs],
        "store": manifest.store,
    })


def report_from_store(out_dir: Path, *, store_path: Path | None = None,
                      judge: str | None = None, plots: bool = True,
                      thresholds: Sequence[float] | None = None,
                      stream: Sequence[Path] | Path | None = None) -> BenchResult:
    """Redo the analysis and the report from ``bench.json`` and the vote store; no model runs.

    Measured runs of an earlier report (``report.json``) are kept only when their signature (the
    model files, the items, the configurations) is what this analysis would measure.
    """
    from speculabel.report import write_report

    manifest = Manifest.load(out_dir)
    path = store_path or Path(manifest.store)
    if not path.is_file():
        raise FileNotFoundError(f"vote store {path} not found")
    with VoteStore(path) as store:
        table, missing = vote_table(store, manifest)
    gaps = {m: k for m, k in missing.items() if k}
    if gaps:
        raise ValueError(
            f"the vote store {path} lacks votes for this bench: {gaps}; rerun the bench to fill it"
        )
    learned: dict[str, dict[str, list[Vote]]] = {}
    if manifest.learners:
        path_l = out_dir / LEARNED
        if not path_l.is_file():
            raise FileNotFoundError(f"{path_l} not found: rerun the bench to fit "
                                    f"{', '.join(manifest.learners)}")
        raw = json.loads(path_l.read_text(encoding="utf-8"))["votes"]
        learned = {ref: {m: [Vote.from_json(v) for v in vs] for m, vs in by.items()}
                   for ref, by in raw.items()}
    analysis = _analyse(table, manifest, learned, 0.1, 100, 0, judge=judge,
                        thresholds=thresholds)
    analysis["bench"] = _bench_info(manifest, None)
    attach_streams(analysis, stream)
    analysis["measured"] = {"skipped": "report redone from the store; no measured runs", "runs": []}
    old = out_dir / "report.json"
    if old.is_file():
        try:
            n_measured = int((json.loads(old.read_text(encoding="utf-8")).get("measured") or {})
                             .get("items") or 0)
        except (OSError, ValueError):
            n_measured = 0
        held = (manifest.split or {}).get("held") or list(range(len(manifest.item_ids)))
        sig = measure_signature(manifest, to_measure(analysis), held[:n_measured])
        prev = previous_measured(out_dir, sig) if n_measured else None
        if prev is not None:
            analysis["measured"] = prev
        else:
            analysis["measured"]["skipped"] = (
                "report redone from the store; the measured runs of the last report were of other "
                "models, items or configurations, so none is shown (rerun the bench to measure)"
            )
    files = write_report(analysis, out_dir, plots=plots)
    return BenchResult(out_dir, manifest, [], analysis, files)

