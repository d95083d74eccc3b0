"""The cascade as a Ray Data pipeline.

Data flow, as Ray sees it::

    read (Ray's CSV/JSON/Parquet readers; local paths or any filesystem Ray reads)
      -> prepare (task: ids already in OUT dropped, empty texts become input-error records)
      -> one step per worker model (actor pool, each actor loads its model once; a model behind
         a server: plain tasks, at most ``server_tasks`` at a time)
      -> the acceptance rule (task, per batch; under early exit: two workers, the rule, the
         third worker on what is left, the rule again)
      -> the judge (actor pool or server tasks), asked only about the escalated items
      -> write (task: each batch's records as one shard in OUT, see :mod:`.shards`)
      -> the driver reads one summary row per shard (progress, counts)

Each step passes the rows that are not its business through (see :mod:`.stages`), so the
decided and the escalated items stay in one stream instead of two branches Ray would compute
twice; the union is the write step's input.

Failures: Ray retries a task whose worker process died and restarts a dead actor, resubmitting
its batch (Ray Data's defaults: ``max_retries=-1``, ``max_restarts=-1``, ``max_task_retries=-1``).
A batch is written only in the write step, as a shard named after its ids, so a retry replaces
the shard instead of adding a second record.  An exception in a model's own code is not retried:
the run stops, and a rerun resumes.

Vote store: each actor opens the store at the driver's path on its own node.  On one machine that
is the same SQLite file for every actor (WAL: concurrent readers, one writer at a time).  On a
cluster every node keeps its own store at that path (a per-node store: a rerun reuses the votes
of the items its actors scored on that node before); a node where it cannot be opened runs
without one.  Do not put it on a network filesystem (SQLite's locking is not safe there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from speculabel.cascade.config import CascadeConfig
from speculabel.cascade.run import CascadeStats
from speculabel.scale.reading import LIGHT_CPUS, check_ids, read_input
from speculabel.scale.settings import EngineError, RaySettings, check_ray_setup, is_server
from speculabel.scale.stages import (
    DecideCall,
    FusedStage,
    JudgeStage,
    ModelSpec,
    RecordsCall,
    ServerCall,
    Shape,
    WorkerStage,
    WriteCall,
    plan_steps,
    prepare_rows,
    to_rows,
    to_table,
)
from speculabel.tasks import Task

if TYPE_CHECKING:
    from speculabel.policy import Policy
    from speculabel.scale.shards import ShardDir


# ---------------------------------------------------------------------- Ray itself
def ensure_ray(address: str | None, quiet: bool = True) -> bool:
    """Connect to ``address`` (or start a local instance); True when this call started Ray."""
    import ray
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver draws its own, from the shards written
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR if quiet else logging.WARNING)
    bars = logging.getLogger("ray.data._internal.progress")
    if not any(isinstance(f, _NoBarsNote) for f in bars.filters):
        bars.addFilter(_NoBarsNote())
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=not quiet,
             logging_level=logging.ERROR if quiet else logging.WARNING)
    return True


class _NoBarsNote(logging.Filter):
    """Ray Data's "Progress bars disabled ... to enable, set ..." is no advice for our users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Progress bars disabled")


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


# ---------------------------------------------------------------------- the pipeline
@dataclass
class Layout:
    """Actors and CPUs of each model step (from the settings and the cluster's size)."""

    worker_cpus: float
    judge_cpus: float
    actors: int
    needed_cpus: float
    fused: bool = False  # every model in one actor per pool slot, ``worker_cpus`` each


def plan_layout(cfg: CascadeConfig, settings: RaySettings, cpus: float) -> Layout:
    """CPUs per actor: as set, else the cluster's CPUs but one shared out (at most 1 each);
    fused (one actor holding every model, the cluster's CPUs less the light tasks' share) when
    ``settings.fused`` says so or, left unset, when that share would be under one CPU and no
    model is behind a server (a server's model keeps its concurrent tasks); refused when the
    actors would need more CPUs than the cluster has (Ray would wait for them
    forever)."""
    local_workers = [w for w in cfg.workers if not is_server(w)]
    judge_local = cfg.judge is not None and not is_server(cfg.judge)
    actors = len(local_workers) * settings.pool_size + (settings.judge_pool_size if judge_local else 0)
    # leave up to one CPU to tasks that ask for a whole one (a user's own read_csv, say)
    share = max(0.1, min(1.0, round((cpus - min(1.0, cpus / 2)) / max(1, actors), 2)))
    served = any(is_server(m) for m in [*cfg.workers, *([cfg.judge] if cfg.judge else [])])
    fused = settings.fused if settings.fused is not None else (
        actors > 1 and share < 1.0 and not settings.cpus_per_actor and not served)
    if fused:
        # one actor per pool slot holds every model; the light tasks keep a few tenths of a CPU
        each = settings.cpus_per_actor or max(
            0.1, round((cpus - LIGHT_CPUS * 4) / settings.pool_size, 2))
        needed = each * settings.pool_size
        if needed + LIGHT_CPUS * 4 > cpus + 1e-9:
            raise EngineError(
                f"the fused actors need {needed:g} CPUs ({settings.pool_size} actors) and the "
                f"cluster has {cpus:g}: lower --pool-size or --cpus-per-actor, or add nodes")
        return Layout(each, each, settings.pool_size, needed, fused=True)
    worker = settings.cpus_per_actor or share
    judge = settings.judge_cpus_per_actor or settings.cpus_per_actor or share
    needed = (len(local_workers) * settings.pool_size * worker
              + (settings.judge_pool_size * judge if judge_local else 0))
    if needed + LIGHT_CPUS * 4 > cpus:
        raise EngineError(
            f"the actor pools need {needed:g} CPUs ({actors} actors) and the cluster has {cpus:g}: "
            "lower --pool-size, --judge-pool-size or --cpus-per-actor, or add nodes"
        )
    return Layout(worker, judge, actors, needed)


def shape_of(cfg: CascadeConfig, task: Task) -> Shape:
    return Shape(task=task, n_workers=len(cfg.workers), policy=cfg.policy,
                 threshold=cfg.threshold, weights=dict(cfg.weights),
                 parallel_workers=cfg.parallel_workers,
                 early_exit=cfg.early_exit and len(cfg.workers) == 3)


_DONE_CACHE: dict[str, frozenset[str]] = {}


@dataclass(frozen=True)
class PrepareCall:
    """Input rows -> stage rows; the ids already done come from the object store, once per
    worker process."""

    shape: Shape
    columns: dict[str, str]
    id_column: str
    source: str
    done: Any = None  # an ObjectRef of a frozenset of ids, or None

    def __call__(self, table: Any) -> Any:
        done: frozenset[str] = frozenset()
        if self.done is not None:
            import ray

            key = self.done.hex()
            if key not in _DONE_CACHE:
                _DONE_CACHE.clear()
                _DONE_CACHE[key] = ray.get(self.done)
            done = _DONE_CACHE[key]
        return to_table(prepare_rows(to_rows(table), self.shape, self.columns, self.id_column,
                                     self.source, done))


def _model_step(ds: Any, model: ModelSpec, cfg: CascadeConfig, settings: RaySettings,
                layout: Layout) -> Any:
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    from speculabel.backends.registry import kind_of

    common: dict[str, Any] = {"batch_size": cfg.batch_size, "batch_format": "pyarrow"}
    if is_server(model.spec):
        return ds.map_batches(ServerCall(model), num_cpus=LIGHT_CPUS,
                              compute=TaskPoolStrategy(size=settings.server_tasks), **common)
    judge = model.role == "judge"
    cpus = layout.judge_cpus if judge else layout.worker_cpus
    if kind_of(model.spec) == "llamacpp" and "n_threads" not in model.options:
        # one llama.cpp thread per reserved CPU: busy-waiting threads on shared cores stall
        model = replace(model, options={**model.options, "n_threads": max(1, int(cpus))})
    return ds.map_batches(JudgeStage if judge else WorkerStage, fn_constructor_args=(model,),
                          num_cpus=cpus, **common, compute=ActorPoolStrategy(
                              size=settings.judge_pool_size if judge else settings.pool_size))


def cascade_steps(ds: Any, cfg: CascadeConfig, task: Task, settings: RaySettings,
                  store: str | None, layout: Layout, shape: Shape | None = None) -> Any:
    """Stage rows in, stage rows out with every item ``done`` or ``pending``."""
    shape = shape or shape_of(cfg, task)
    assert cfg.judge is not None  # check_ray_setup
    if layout.fused:
        return _fused_step(ds, cfg, shape, settings, store, layout)
    for step in plan_steps(shape, cfg.workers, cfg.judge):
        if step.kind == "decide":
            ds = ds.map_batches(DecideCall(shape, step.states, step.undecided),
                                batch_format="pyarrow", num_cpus=LIGHT_CPUS)
            continue
        cal = cfg.calibration.get(step.spec)
        model = ModelSpec(step.spec, step.role, shape, dict(cfg.models.get(step.spec, {})),
                          cal.model_dump() if cal else None, store, step.states)
        ds = _model_step(ds, model, cfg, settings, layout)
    return ds


def classify_dataset(
    ds: Any,
    cfg: CascadeConfig,
    *,
    id_column: str = "id",
    columns: dict[str, str] | None = None,
    settings: RaySettings | None = None,
    votes: str | None = None,
    task: Task | None = None,
    run: str | None = None,
    policy: Policy | None = None,
) -> Any:
    """A Ray dataset of items in, a Ray dataset of records out (lazy; nothing is written).

    ``ds`` has ``id_column`` and a column per task field (``columns`` maps field -> column;
    default: the field's name); ids must be unique.  The result has the record schema of
    :func:`speculabel.scale.shards.records_table`: one row per decided item; items the judge
    could not be reached for are left out (as the single-process run leaves them pending).
    ``votes``: the vote store's path on every node (None: no store); ``policy``: a rule object
    that replaces the config's named one (it must pickle).  Call ``ray.init`` first.
    """
    from speculabel.cascade.build import check_setup
    from speculabel.tasks import load_task

    task = task or load_task(cfg.task)
    check_setup(cfg, task)
    check_ray_setup(cfg, id_column)
    settings = settings or RaySettings()
    layout = plan_layout(cfg, settings, cluster_cpus())
    shape = shape_of(cfg, task)
    if policy is not None:
        shape = replace(shape, rule=policy)
    rows = ds.map_batches(PrepareCall(shape, dict(columns or {}), id_column,
                                      "dataset"), batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    rows = cascade_steps(rows, cfg, task, settings, votes, layout, shape)
    return rows.map_batches(RecordsCall(run), batch_format="pyarrow", num_cpus=LIGHT_CPUS)


# ---------------------------------------------------------------------- a run into OUT
@dataclass
class RayRun:
    """What a run did: the cascade's usual statistics, plus the resume and shard counts."""

    stats: CascadeStats = field(default_factory=CascadeStats)
    rows: int = 0
    skipped: int = 0
    shards: int = 0
    duplicates_removed: int = 0


def summaries(ds: Any) -> Iterator[dict[str, Any]]:
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from batch.to_pylist()


def classify_to_shards(
    input: str,
    out: ShardDir,
    cfg: CascadeConfig,
    task: Task,
    *,
    id_column: str,
    columns: dict[str, str],
    settings: RaySettings,
    votes: str | None = None,
    limit: int | None = None,
    on_start: Callable[[RayRun], None] | None = None,
    on_progress: Callable[[RayRun], None] | None = None,
) -> RayRun:
    """Read ``input``, skip what ``out`` (a :class:`~speculabel.scale.shards.ShardDir`, already
    checked) holds, classify the rest, write shards; Ray must be initialised.

    Raises :class:`InputError` (bad input) and :class:`EngineError` (a layout the cluster cannot
    hold) before any model loads.
    """
    import ray
    from ray.data import DataContext

    needed = list(dict.fromkeys([id_column, *(columns.get(f) or f for f in task.fields)]))
    ctx = DataContext.get_current()
    order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = limit is not None  # "the first N rows", every time
    try:
        ds = read_input(input, needed)
        if limit is not None:
            ds = ds.limit(limit)
        done = frozenset(out.done)
        check = check_ids(ds, input, id_column, needed, done)
        layout = plan_layout(cfg, settings, cluster_cpus())
        result = RayRun(rows=check.rows, skipped=check.done)
        if on_start is not None:
            on_start(result)
        out.start()
        if check.done == check.rows:
            return result
        t0 = time.perf_counter()
        rows = ds.map_batches(
            PrepareCall(shape_of(cfg, task), columns, id_column, input,
                        ray.put(done) if done else None),
            batch_format="pyarrow", num_cpus=LIGHT_CPUS)
        rows = cascade_steps(rows, cfg, task, settings, votes, layout)
        written = rows.map_batches(WriteCall(out.location, settings.shard_format, out.run.fingerprint),
                                   batch_size=settings.shard_rows, batch_format="pyarrow",
                                   num_cpus=LIGHT_CPUS)
        st = result.stats
        for s in summaries(written):
            st.items += s["records"]
            st.by_workers += s["by_workers"]
            st.judge_calls += s["judge_calls"]
            st.errors += s["failures"]
            st.pending += s["pending"]
            st.truncated += s["truncated"]
            st.latencies.extend(s["latencies"])
            result.shards += bool(s["shard"])
            st.wall_s = time.perf_counter() - t0
            if on_progress is not None:
                on_progress(result)
        result.duplicates_removed = out.dedupe()
        return result
    finally:
        ctx.execution_options.preserve_order = order


def _fused_step(ds: Any, cfg: CascadeConfig, shape: Shape, settings: RaySettings,
                store: str | None, layout: Layout) -> Any:
    """Every model in one actor (a pool of ``pool_size``): each batch runs through all the steps
    in that process, as the single-process cascade runs it; llama.cpp models get one thread per
    CPU the actor holds."""
    from ray.data import ActorPoolStrategy

    from speculabel.backends.registry import kind_of

    assert cfg.judge is not None
    threads = max(1, round(layout.worker_cpus))
    models = []
    for spec, role in [*((w, "worker") for w in cfg.workers), (cfg.judge, "judge")]:
        options = dict(cfg.models.get(spec, {}))
        if kind_of(spec) == "llamacpp" and "n_threads" not in options:
            options["n_threads"] = threads
        cal = cfg.calibration.get(spec)
        models.append(ModelSpec(spec, role, shape, options, cal.model_dump() if cal else None,
                                store))
    steps = plan_steps(shape, cfg.workers, cfg.judge)
    return ds.map_batches(FusedStage, fn_constructor_args=(tuple(models), tuple(steps)),
                          num_cpus=layout.worker_cpus, batch_size=cfg.batch_size,
                          batch_format="pyarrow",
                          compute=ActorPoolStrategy(size=settings.pool_size))
