"""``speculabel bench``: the paper's measurements on real data, computed from stored votes.

Three steps, each usable alone:

1. :func:`run_models` asks every listed model about the same items and stores each distribution
   in the :class:`~speculabel.votestore.VoteStore` with its latency and CPU time.  Votes already
   stored are not asked again, so an interrupted bench continues where it stopped and a second
   bench (another rule, another threshold, another judge) costs no model call.
2. :func:`analyse` works from the stored votes alone: every model against every other model and
   against gold, and every worker pair and triple under every rule and threshold, with each
   model taken as the judge in turn; the cost of each configuration as it would run.
3. :func:`measure` runs the real :class:`~speculabel.cascade.Cascade` for the best configurations
   and the judge alone on the same items in this process, one after the other, and sets the
   measured speedup beside the computed one.

A bench writes ``bench.json`` (the manifest: task, items, gold, model fingerprints) into its
output folder so the analysis and the report can be redone from the store without any model.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend, BackendError
from speculabel.metrics import (
    SimResult,
    VoteTable,
    agreement,
    agreement_matrix,
    model_summary,
    pareto_front,
    simulate,
)
from speculabel.policy import ConfidentMajority, Majority, Policy, Unanimous, make_policy
from speculabel.records import Item, Vote
from speculabel.task import Task
from speculabel.votestore import VoteStore, item_key

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
TARGET_AGREEMENT = 0.8
CALIBRATION_TARGETS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
MEASURED_TARGETS = (0.8, 0.9, 0.95)  # calibrated configurations the bench also runs for real
MANIFEST = "bench.json"

Loader = Callable[[str], Backend]
Say = Callable[[str], None]


def _quiet(msg: str) -> None:
    del msg


def default_store_path() -> Path:
    """The vote store the CLI uses by default (shared with ``classify``)."""
    from speculabel.models import home_dir

    return home_dir() / "votes.sqlite"


def _load(spec: str) -> Backend:
    from speculabel.backends.registry import load_backend

    return load_backend(spec)


# ---------------------------------------------------------------- 1. running the models


@dataclass
class ModelRun:
    """What running one model over the bench items cost (cached items cost nothing)."""

    spec: str
    fingerprint: str
    items: int
    cached: int
    scored: int
    abstained: int = 0
    load_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0


def _check_task(backend: Backend, task: Task) -> None:
    check = getattr(backend, "check_task", None)
    if callable(check):
        check(task)


def run_models(
    task: Task,
    items: Sequence[Item],
    specs: Sequence[str],
    store: VoteStore,
    *,
    batch_size: int = 8,
    backends: Mapping[str, Backend] | None = None,
    loader: Loader = _load,
    progress: bool = True,
    interleave: bool = True,
    say: Say = _quiet,
) -> list[ModelRun]:
    """Store every model's vote for every item; returns what each model cost.

    Votes are written to the store after every batch, so at most one batch is lost when the run
    is interrupted.  Each model first scores one item untimed (prompt prefix warm-up).  A
    model's latency per item is the one its backend reports (or the batch's wall time over its
    size when the backend reports none); its CPU time per item is the process-time delta of the
    batch over its size (llama.cpp's threads included).

    ``interleave`` (default) loads every model that has work and lets them take turns, one batch
    each: when other work on the machine comes and goes, every model sees the same conditions, so
    their latencies stay comparable (model after model, a busy spell can make a small worker look
    slower than the judge).  Without it, models run one after the other and only one is in memory.
    Backends given in ``backends`` are used as they are and not closed; others are loaded with
    ``loader`` and closed when their model is done.
    """
    tfp = task.fingerprint()
    keys = [item_key(task, it) for it in items]
    uniq: dict[str, Item] = {}
    for k, it in zip(keys, items, strict=True):
        uniq.setdefault(k, it)
    runs: list[ModelRun] = []
    jobs: list[_Job] = []
    owned: list[Backend] = []
    try:
        for spec in specs:
            given = backends is not None and spec in backends
            t0 = time.perf_counter()
            backend = backends[spec] if backends is not None and given else loader(spec)
            if not given:
                owned.append(backend)
            load_s = 0.0 if given else time.perf_counter() - t0
            _check_task(backend, task)
            fp = backend.fingerprint()
            have = store.get_many(fp, tfp, list(uniq))
            todo = [(k, uniq[k]) for k in uniq if k not in have]
            run = ModelRun(spec, fp, len(uniq), len(uniq) - len(todo), 0, load_s=load_s)
            runs.append(run)
            if todo:
                say(f"{spec}: {len(have)} of {len(uniq)} votes stored, scoring {len(todo)}")
                job = _Job(backend, run, todo)
                if interleave:
                    jobs.append(job)
                else:
                    _drive([job], task, store, tfp, batch_size, progress)
            else:
                say(f"{spec}: all {len(uniq)} votes stored, nothing to score")
            if not interleave and not given:
                owned.remove(backend)
                backend.close()
        if jobs:
            _drive(jobs, task, store, tfp, batch_size, progress)
    finally:
        for b in owned:
            b.close()
    return runs


@dataclass
class _Job:
    backend: Backend
    run: ModelRun
    todo: list[tuple[str, Item]]
    done: int = 0


def _drive(
    jobs: list[_Job], task: Task, store: VoteStore, tfp: str, batch_size: int, progress: bool
) -> None:
    """Score every job's items, one batch per model in turn, storing after each batch."""
    bs = max(1, batch_size)
    for job in jobs:
        # Warm-up, untimed and not stored: the first call evaluates the shared prompt prefix (a
        # few hundred tokens), a one-off cost that a long run pays once; without this, the first
        # item's latency would carry it and inflate the mean and p95 of small benches.
        job.backend.score(task, [job.todo[0][1]])
    bar = None
    tids: list[Any] = []
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("[bold]{task.description:>14s}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), transient=False, refresh_per_second=4,
        )
        bar.start()
        tids = [bar.add_task(j.run.spec, total=len(j.todo), rate="") for j in jobs]
    try:
        while any(j.done < len(j.todo) for j in jobs):
            for idx, job in enumerate(jobs):
                if job.done >= len(job.todo):
                    continue
                chunk = job.todo[job.done : job.done + bs]
                _score_batch(job, chunk, task, store, tfp)
                job.done += len(chunk)
                if bar is not None:
                    r = job.run
                    bar.update(tids[idx], advance=len(chunk),
                               rate=f"{r.scored / max(r.wall_s, 1e-9):.1f} items/s")
    finally:
        if bar is not None:
            bar.stop()


def _score_batch(
    job: _Job, chunk: list[tuple[str, Item]], task: Task, store: VoteStore, tfp: str
) -> None:
    run = job.run
    batch = [it for _, it in chunk]
    w0, c0 = time.perf_counter(), time.process_time()
    votes = job.backend.score(task, batch)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if len(votes) != len(batch):
        raise BackendError(f"{run.spec}: {len(votes)} votes for {len(batch)} items")
    per_wall, per_cpu = wall / len(batch), cpu / len(batch)
    fixed = [
        v if v.latency_s > 0 else Vote(**{**v.__dict__, "latency_s": per_wall}) for v in votes
    ]
    store.put_many(run.fingerprint, tfp, [(k, v) for (k, _), v in zip(chunk, fixed, strict=True)],
                   cpu_s=per_cpu)
    run.scored += len(batch)
    run.abstained += sum(v.label is None for v in votes)
    run.wall_s += wall
    run.cpu_s += cpu


# ---------------------------------------------------------------- manifest and vote table


@dataclass
class Manifest:
    """Everything needed to redo the analysis from the store alone."""

    task: str
    task_fingerprint: str
    labels: list[str]
    dataset: dict[str, Any]
    item_ids: list[str]
    item_keys: list[str]
    gold: list[str | None] | None
    models: list[dict[str, Any]]  # spec, fingerprint, load_s, ...
    judge: str
    store: str
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    created: float = field(default_factory=time.time)

    def save(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        path = out_dir / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {out_dir}: run the bench there first")
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @property
    def specs(self) -> list[str]:
        return [m["spec"] for m in self.models]


def vote_table(store: VoteStore, manifest: Manifest) -> tuple[VoteTable, dict[str, int]]:
    """The stored votes of every model for the manifest's items; and how many were missing.

    A missing vote becomes an abstention ("not in the vote store"); stored abstentions are kept.
    """
    votes: dict[str, list[Vote]] = {}
    cpus: dict[str, list[float]] = {}
    missing: dict[str, int] = {}
    for m in manifest.models:
        spec, fp = m["spec"], m["fingerprint"]
        got = store.get_many_stored(
            fp, manifest.task_fingerprint, manifest.item_keys, include_abstentions=True,
            model_name=spec,
        )
        vs: list[Vote] = []
        cs: list[float] = []
        miss = 0
        for k in manifest.item_keys:
            s = got.get(k)
            if s is None:
                miss += 1
                vs.append(Vote.abstain(spec, "not in the vote store"))
                cs.append(0.0)
            else:
                vs.append(s.vote)
                cs.append(s.cpu_s if s.cpu_s is not None else s.vote.latency_s)
        votes[spec], cpus[spec], missing[spec] = vs, cs, miss
    return VoteTable(votes, cpus), missing


# ---------------------------------------------------------------- 2. analysis


def policies(thresholds: Sequence[float]) -> list[Policy]:
    """The rules the bench sweeps: majority, unanimous, confident-majority at each threshold."""
    out: list[Policy] = [Majority(), Unanimous()]
    out.extend(ConfidentMajority(t) for t in thresholds)
    return out


def worker_sets(models: Sequence[str], judge: str, table: VoteTable) -> list[tuple[str, ...]]:
    """Every pair and triple of the other models, cheapest first within each set."""
    others = [m for m in models if m != judge]
    cost = {m: sum(table.latency(m)) for m in others}
    sets: list[tuple[str, ...]] = []
    for r in (2, 3):
        for combo in itertools.combinations(others, r):
            sets.append(tuple(sorted(combo, key=lambda m: (cost[m], m))))
    return sets


MODES = ((False, False), (False, True), (True, False), (True, True))  # (parallel, early_exit)


def sweep(
    table: VoteTable,
    judge: str,
    thresholds: Sequence[float],
    *,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
) -> list[SimResult]:
    """Every worker pair and triple x every rule x (sequential/parallel, with/without early exit).

    Early exit matters only for triples, so pairs get the two modes without it.
    """
    out: list[SimResult] = []
    for workers in worker_sets(table.models, judge, table):
        for pol in policies(thresholds):
            for parallel, early in MODES:
                if early and len(workers) != 3:
                    continue
                out.append(
                    simulate(table, workers, judge, pol, parallel=parallel, early_exit=early,
                             gold=gold, labels=labels)
                )
    return out


def select_best(
    results: Sequence[SimResult], k: int = 3, target: float = TARGET_AGREEMENT,
    parallel: bool = False,
) -> tuple[list[SimResult], str]:
    """The configurations to measure, and how they were chosen.

    Among configurations in the given mode (sequential by default; the best early-exit variant
    of each worker set and rule), the top ``k`` by speedup whose end-to-end agreement with the
    judge is at least ``target``; when none reaches it, the top ``k`` by end-to-end agreement.
    """
    best: dict[tuple[tuple[str, ...], str], SimResult] = {}
    for r in results:
        if r.parallel != parallel:
            continue
        key = (r.workers, r.rule)
        if key not in best or r.speedup > best[key].speedup:
            best[key] = r
    # Rules that take exactly the same decisions with the same workers are one cascade: keep
    # the simplest (majority, then unanimous, then the lowest threshold).
    same: dict[tuple[Any, ...], SimResult] = {}
    for r in sorted(best.values(), key=_rule_order):
        sig = (r.workers, r.early_exit, tuple(r.decided), tuple(r.final_labels))
        same.setdefault(sig, r)
    cands = list(same.values())
    ok = [r for r in cands if r.e2e_agreement >= target]
    if ok:
        ok.sort(key=lambda r: (-r.speedup, -r.e2e_agreement, r.key))
        return ok[:k], (
            f"top {k} by speedup among configurations with end-to-end agreement >= {target:g} "
            f"with the judge ({'parallel' if parallel else 'sequential'} workers)"
        )
    cands.sort(key=lambda r: (-r.e2e_agreement, -r.speedup, r.key))
    return cands[:k], (
        f"no configuration reaches end-to-end agreement {target:g} with the judge: "
        f"top {k} by end-to-end agreement instead"
    )


def _rule_order(r: SimResult) -> tuple[int, float]:
    if r.rule == "majority":
        return (0, 0.0)
    if r.rule == "unanimous":
        return (1, 0.0)
    return (2, float(r.rule.split("@", 1)[1]) if "@" in r.rule else 0.0)


def _clean(x: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become null."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def analyse(
    table: VoteTable,
    judge: str,
    *,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    all_judges: bool = True,
    target: float = TARGET_AGREEMENT,
    calibration_targets: Sequence[float] = CALIBRATION_TARGETS,
    delta: float = 0.1,
    splits: int = 100,
) -> dict[str, Any]:
    """Every number of the report, from the vote table alone (JSON-ready, NaN as null).

    ``calibration_targets`` (empty: none) adds Criterion 2 with a guarantee: the certified
    confident-majority threshold per worker set and target, and the split check of it."""
    if judge not in table.votes:
        raise ValueError(f"judge {judge!r} is not among the models {table.models}")
    if len(table.models) < 3:
        raise ValueError("a bench needs at least three models: two workers and a judge")
    has_gold = gold is not None and any(g is not None for g in gold)
    g = gold if has_gold else None
    models = {m: model_summary(table, m, g, labels) for m in table.models}
    for m in table.models:
        models[m]["agreement_with_judge"] = agreement(table.labels(m), table.labels(judge))
    matrix = agreement_matrix({m: table.labels(m) for m in table.models})

    results = sweep(table, judge, thresholds, gold=g, labels=labels)
    selected, how = select_best(results, target=target)
    seq = [r for r in results if not r.parallel]
    front = pareto_front([(r.judge_call_rate, r.e2e_agreement) for r in seq])
    front_keys = [seq[i].key for i in front]

    by_judge: dict[str, Any] = {}
    if all_judges:
        for j in table.models:
            rs = results if j == judge else sweep(table, j, thresholds, gold=g, labels=labels)
            sel, how_j = select_best(rs, target=target)
            by_judge[j] = {
                "selected": [r.to_json() for r in sel],
                "how": how_j,
                "configs": [r.to_json() for r in rs] if j != judge else "see configs",
            }

    judge_summary = models[judge]
    out = {
        "judge": judge,
        "n": table.n,
        "labels": list(labels) if labels else None,
        "has_gold": has_gold,
        "thresholds": list(thresholds),
        "target_agreement": target,
        "models": models,
        "agreement_matrix": matrix,
        "judge_alone": {
            "latency_mean_s": judge_summary["latency_mean_s"],
            "latency_p50_s": judge_summary["latency_p50_s"],
            "latency_p95_s": judge_summary["latency_p95_s"],
            "cpu_mean_s": judge_summary["cpu_mean_s"],
            "accuracy": judge_summary.get("accuracy"),
            "macro_recall": judge_summary.get("macro_recall"),
        },
        "configs": [r.to_json() for r in results],
        "pareto_front": front_keys,
        "selected": [r.to_json() for r in selected],
        "selection": how,
        "by_judge": by_judge,
    }
    if calibration_targets:
        from speculabel.guarantee import calibrated_configs

        out["calibration"] = calibrated_configs(
            table, judge, worker_sets(table.models, judge, table), targets=calibration_targets,
            delta=delta, splits=splits, gold=g, labels=labels,
        )
    return _clean(out)


def to_measure(analysis: Mapping[str, Any],
               targets: Sequence[float] = MEASURED_TARGETS) -> list[dict[str, Any]]:
    """The selected configurations, plus the fastest calibrated one at each of ``targets``
    that some worker set meets (so the report shows Criterion 2's measured speedup too)."""
    configs = list(analysis.get("selected") or [])
    best = (analysis.get("calibration") or {}).get("best") or {}
    for t in targets:
        for method, by_target in best.items():
            cfg = (by_target.get(f"{t:g}") or {}).get("config")
            if cfg and cfg["key"] not in {c["key"] for c in configs}:
                configs.append({**cfg, "calibrated_target": float(t), "method": method})
    return configs


def attach_learner_stream(analysis: dict[str, Any], paths: Sequence[Path] | Path | None) -> None:
    """Put learner-stream results (``scripts/learner_stream.py``'s JSON) into the report."""
    if paths is None:
        return
    streams: list[dict[str, Any]] = []
    for path in [paths] if isinstance(paths, Path) else paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"learner stream file {path} not found (run "
                                    "scripts/learner_stream.py first)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        missing = {"meta", "total", "windows"} - set(data)
        if missing:
            raise ValueError(
                f"{path}: not a learner stream result (no {', '.join(sorted(missing))})")
        streams.append(_clean({**data, "file": str(path)}))
    if streams:
        analysis["learner_streams"] = [*analysis.get("learner_streams", []), *streams]


# ---------------------------------------------------------------- 3. measured runs


def _policy_of(rule: str) -> Policy:
    """Rebuild a rule from its description (``majority``, ``confident-majority@0.8``)."""
    if "@" in rule:
        name, thr = rule.split("@", 1)
        return make_policy(name, float(thr))
    return make_policy(rule)


def measure(
    task: Task,
    items: Sequence[Item],
    configs: Sequence[Mapping[str, Any]],
    table: VoteTable,
    *,
    gold: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
    loader: Loader = _load,
    backends: Mapping[str, Backend] | None = None,
    batch_size: int = 8,
    say: Say = _quiet,
) -> dict[str, Any]:
    """Run the judge alone and each configuration's real cascade on the same items.

    ``table`` holds the stored votes of the same items (same order) for the computed numbers.
    Models are loaded once and warmed up on one item (prompt prefix evaluated) before anything
    is timed; the judge alone runs first, then each cascade, in this process, with no vote store.
    """
    from speculabel.cascade import Cascade

    if not configs:
        return {"skipped": "no configuration to measure", "runs": []}
    judge_spec = str(configs[0]["judge"])
    specs = list(dict.fromkeys([judge_spec, *(w for c in configs for w in c["workers"])]))
    loaded: dict[str, Backend] = {}
    load_s: dict[str, float] = {}
    owned: list[Backend] = []
    try:
        for spec in specs:
            if backends is not None and spec in backends:
                loaded[spec] = backends[spec]
                load_s[spec] = 0.0
                continue
            t0 = time.perf_counter()
            b = loader(spec)
            load_s[spec] = time.perf_counter() - t0
            loaded[spec] = b
            owned.append(b)
        warm = items[:1]
        for b in loaded.values():
            b.score(task, warm)  # prompt prefix evaluated once, outside the timings

        say(f"measuring the judge alone ({judge_spec}) on {len(items)} items")
        judge = loaded[judge_spec]
        w0, c0 = time.perf_counter(), time.process_time()
        judge_votes: list[Vote] = []
        for s in range(0, len(items), max(1, batch_size)):
            judge_votes.extend(judge.score(task, items[s : s + batch_size]))
        judge_wall, judge_cpu = time.perf_counter() - w0, time.process_time() - c0
        judge_labels = [v.label for v in judge_votes]
        stored_judge = table.labels(judge_spec)

        runs: list[dict[str, Any]] = []
        for cfg in configs:
            workers = [str(w) for w in cfg["workers"]]
            rule = str(cfg["rule"])
            early = bool(cfg["early_exit"])
            say(f"measuring cascade {'+'.join(workers)} | {rule}"
                f"{' | early exit' if early else ''} on {len(items)} items")
            cascade = Cascade(
                task, [loaded[w] for w in workers], judge, _policy_of(rule),
                early_exit=early, parallel_workers=False, vote_store=None,
                batch_size=batch_size,
            )
            w0, c0 = time.perf_counter(), time.process_time()
            emitted = cascade.classify(items)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            by_id = {r.id: r for r in emitted}  # worker-decided items of a batch come out first
            if len(by_id) != len(items):
                raise ValueError(f"the cascade returned {len(by_id)} records for {len(items)} "
                                 "items (item ids must be unique)")
            records = [by_id[it.id] for it in items]
            sim = simulate(table, workers, judge_spec, _policy_of(rule), parallel=False,
                           early_exit=early, gold=gold, labels=labels)
            final = [r.label for r in records]
            decided = [r.decided_by == "workers" for r in records]
            measured_speedup = judge_wall / wall if wall > 0 else math.nan
            measured_cpu = judge_cpu / cpu if cpu > 0 else math.nan
            run = {
                "key": sim.key,
                "workers": workers,
                "rule": rule,
                "early_exit": early,
                "items": len(items),
                "measured": {
                    "cascade_wall_s": wall,
                    "cascade_cpu_s": cpu,
                    "judge_wall_s": judge_wall,
                    "judge_cpu_s": judge_cpu,
                    "speedup": measured_speedup,
                    "cpu_speedup": measured_cpu,
                    "coverage": sum(decided) / len(decided) if decided else math.nan,
                    "e2e_agreement_with_judge": agreement(final, judge_labels),
                    "e2e_accuracy": _acc(final, gold),
                    "cascade_latency_p95_s": _p95([r.latency_s for r in records]),
                },
                "computed": {
                    "speedup": sim.speedup,
                    "cpu_speedup": sim.cpu_speedup,
                    "coverage": sim.coverage,
                    "e2e_agreement_with_judge": sim.e2e_agreement,
                    "e2e_accuracy": sim.e2e_accuracy,
                    "cascade_latency_p95_s": sim.latency_p95_s,
                },
                "same_final_label_as_computed": agreement(final, sim.final_labels),
                "same_decider_as_computed": (
                    sum(a == b for a, b in zip(decided, sim.decided, strict=True)) / len(decided)
                    if decided else math.nan
                ),
            }
            run["gap"] = {
                "speedup_rel": _rel(measured_speedup, sim.speedup),
                "cpu_speedup_rel": _rel(measured_cpu, sim.cpu_speedup),
            }
            runs.append(run)
        return _clean({
            "items": len(items),
            "judge": judge_spec,
            "environment_after": environment(),
            "load_s": load_s,
            "judge_alone": {
                "wall_s": judge_wall,
                "cpu_s": judge_cpu,
                "agreement_with_stored_votes": agreement(judge_labels, stored_judge),
            },
            "runs": runs,
        })
    finally:
        for b in owned:
            b.close()


def _acc(pred: Sequence[str | None], gold: Sequence[str | None] | None) -> float | None:
    if gold is None or not any(g is not None for g in gold):
        return None
    from speculabel.metrics import accuracy

    return accuracy(pred, gold)


def _p95(xs: Sequence[float]) -> float:
    from speculabel.metrics import percentile

    return percentile(xs, 95)


def _rel(measured: float, computed: float) -> float:
    """measured / computed - 1 (0.1: measured 10 % higher)."""
    if not computed or math.isnan(computed) or math.isnan(measured):
        return math.nan
    return measured / computed - 1.0


# ---------------------------------------------------------------- the whole bench


@dataclass
class BenchResult:
    out_dir: Path
    manifest: Manifest
    runs: list[ModelRun]
    analysis: dict[str, Any]
    files: dict[str, Path]


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
    loader: Loader = _load,
    backends: Mapping[str, Backend] | None = None,
    progress: bool = True,
    plots: bool = True,
    interleave: bool = True,
    learner_stream: Sequence[Path] | Path | None = None,
    remeasure: bool = False,
    say: Say = _quiet,
) -> BenchResult:
    """Run the models into the store, analyse, measure the best configurations, write the report.

    ``measure_items`` = 0 skips the measured runs.  Measured runs of an earlier bench in
    ``out_dir`` with the same models, items and configurations are reused (a rerun makes no
    model call), unless ``remeasure``.
    """
    from speculabel.report import write_report

    specs = list(dict.fromkeys(specs))
    judge = judge or specs[-1]
    if judge not in specs:
        raise ValueError(f"judge {judge!r} must be one of --models ({', '.join(specs)})")
    if len(specs) < 3:
        raise ValueError("a bench needs at least three models: two workers and a judge")
    if gold is not None and len(gold) != len(items):
        raise ValueError(f"{len(gold)} gold labels for {len(items)} items")
    store_path = store_path or default_store_path()
    out_dir.mkdir(parents=True, exist_ok=True)
    with VoteStore(store_path) as store:
        runs = run_models(task, items, specs, store, batch_size=batch_size, backends=backends,
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
        )
        manifest.save(out_dir)
        table, _ = vote_table(store, manifest)
    analysis = analyse(table, judge, gold=manifest.gold, labels=task.label_names,
                       thresholds=thresholds)
    analysis["bench"] = _bench_info(manifest, runs)
    attach_learner_stream(analysis, learner_stream)
    if measure_items > 0:
        idx = list(range(min(measure_items, len(items))))
        sub = table.subset(idx)
        sub_gold = [manifest.gold[i] for i in idx] if manifest.gold is not None else None
        configs = to_measure(analysis)
        sig = _measure_signature(manifest, runs, configs, idx)
        prev = None if remeasure else _previous_measured(out_dir, sig)
        try:
            if prev is not None:
                say("measured runs: reusing those of the previous bench (same models, items and "
                    "configurations; --remeasure to time them again)")
                analysis["measured"] = prev
            else:
                analysis["measured"] = measure(
                    task, [items[i] for i in idx], configs, sub, gold=sub_gold,
                    labels=task.label_names, loader=loader, backends=backends,
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
    else:
        analysis["measured"] = {"skipped": "measured runs turned off (--measure-items 0)",
                                "runs": []}
    files = write_report(analysis, out_dir, plots=plots)
    return BenchResult(out_dir, manifest, runs, analysis, files)


def _measure_signature(manifest: Manifest, runs: Sequence[ModelRun],
                       configs: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> str:
    """What a measured run depends on: the model files, the items, the configurations."""
    import hashlib

    blob = json.dumps({
        "task": manifest.task_fingerprint,
        "models": sorted((r.spec, r.fingerprint) for r in runs),
        "items": [manifest.item_keys[i] for i in idx],
        "configs": sorted(str(c["key"]) for c in configs),
    }, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _previous_measured(out_dir: Path, signature: str) -> dict[str, Any] | None:
    path = out_dir / "report.json"
    try:
        prev = json.loads(path.read_text(encoding="utf-8")).get("measured") or {}
    except (OSError, ValueError):
        return None
    if prev.get("signature") == signature and prev.get("runs"):
        return dict(prev)
    return None


def environment() -> dict[str, Any]:
    """The machine the timings come from; the load average shows other work competing for it."""
    import contextlib
    import os
    import platform

    env: dict[str, Any] = {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(OSError):  # not on every platform
        env["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    try:
        from importlib.metadata import version

        env["llama_cpp_python"] = version("llama-cpp-python")
    except Exception:  # not installed: the bench may use other backends only
        env["llama_cpp_python"] = None
    return env


def _bench_info(manifest: Manifest, runs: Sequence[ModelRun] | None) -> dict[str, Any]:
    return _clean({
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
                      learner_stream: Sequence[Path] | Path | None = None) -> BenchResult:
    """Redo the analysis and the report from ``bench.json`` and the vote store; no model runs.

    Measured runs of an earlier report (``report.json``) are kept when the judge is the same.
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
    j = judge or manifest.judge
    analysis = analyse(table, j, gold=manifest.gold, labels=manifest.labels,
                       thresholds=thresholds or manifest.thresholds)
    analysis["bench"] = _bench_info(manifest, None)
    attach_learner_stream(analysis, learner_stream)
    old = out_dir / "report.json"
    analysis["measured"] = {"skipped": "report redone from the store; no measured runs", "runs": []}
    if old.is_file():
        prev = json.loads(old.read_text(encoding="utf-8"))
        m = prev.get("measured") or {}
        if m.get("runs") and m.get("judge") == j:
            analysis["measured"] = m
    files = write_report(analysis, out_dir, plots=plots)
    return BenchResult(out_dir, manifest, [], analysis, files)
