"""The Ray pipeline's steps, one batch at a time, as plain Python (no Ray in this module).

Every row between steps has the columns of :data:`STAGE_COLUMNS`: the item (``id``, its
``fields`` as JSON), where it stands (``state``), the worker votes so far (JSON, full float
precision, so the rule decides on exactly the numbers the models gave), the rule's reason for an
escalated item, and the finished record (JSON).  States:

``vote``    the workers (all of them, or the first two under early exit) are to vote;
``third``   early exit: the first two did not settle it, the third worker votes;
``judge``   escalated: the judge decides;
``pending`` the judge was unavailable (a retryable abstention): no record, the next run retries;
``done``    ``record`` holds the item's record.

A step acts on the rows in its states and passes the others through untouched, so the whole
cascade is one linear pipeline (read -> prepare -> one step per worker -> decide -> judge ->
write) in which each model still sees only the items the single-process cascade would give it.
Records are built exactly as :class:`speculabel.cascade.run.Cascade` builds them (the tests
compare the two on the same votes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from speculabel.backends.base import Backend
from speculabel.cascade.decide import Escalation, Rules, decide_batch, settle
from speculabel.cascade.run import wrap_backend
from speculabel.policy import Decision, Policy
from speculabel.records import Item, Record, Vote
from speculabel.tasks import Task

log = logging.getLogger(__name__)

STAGE_COLUMNS = ("id", "fields", "truncated", "state", "votes", "rule", "record")
Row = dict[str, Any]


def stage_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("fields", pa.string()), ("truncated", pa.bool_()),
                      ("state", pa.string()), ("votes", pa.string()), ("rule", pa.string()),
                      ("record", pa.string())])


def to_rows(table: Any) -> list[Row]:
    rows: list[Row] = table.to_pylist()
    return rows


def to_table(rows: Sequence[Row]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(list(rows), schema=stage_schema())


# ---------------------------------------------------------------------- votes and items in rows
def dump_votes(votes: Sequence[Vote]) -> str:
    return json.dumps([dataclasses.asdict(v) for v in votes])


def load_votes(blob: str) -> list[Vote]:
    return [Vote(**d) for d in json.loads(blob or "[]")]


def row_item(row: Row) -> Item:
    return Item(row["id"], json.loads(row["fields"]), truncated=bool(row["truncated"]))


@dataclass(frozen=True)
class Shape:
    """What every step needs to know about the cascade (picklable, sent to every task)."""

    task: Task
    n_workers: int
    policy: str
    threshold: float | None
    weights: dict[str, float] = field(default_factory=dict)
    parallel_workers: bool = False
    early_exit: bool = False  # only with three workers
    rule: Policy | None = None  # a rule object instead of the named one (match's MatchRule)

    def make_policy(self) -> Policy:
        from speculabel.policy import make_policy

        if self.rule is not None:
            return self.rule
        return make_policy(self.policy, self.threshold, weights=self.weights)

    def rules(self) -> Rules:
        return Rules(self.make_policy(), self.n_workers, self.parallel_workers, self.early_exit)

    def latency(self, votes: Sequence[Vote]) -> float:
        return self.rules().latency(votes)


# ---------------------------------------------------------------------- prepare
def prepare_rows(raw: Sequence[dict[str, Any]], shape: Shape, columns: dict[str, str],
                 id_column: str, source: str, done: frozenset[str] = frozenset()) -> list[Row]:
    """Input rows as stage rows, ids already done left out; an empty text becomes its
    ``input`` error record at once (as in the single-process run, keyed by its id)."""
    out: list[Row] = []
    first = "vote" if shape.n_workers else "judge"
    rule = "" if shape.n_workers else "judge only"
    for values in raw:
        value = values.get(id_column)
        rid = "" if value is None else str(value).strip()
        if rid in done:
            continue
        fields: dict[str, str] = {}
        problem = None
        for name in shape.task.fields:
            col = columns.get(name) or name
            text = "" if values.get(col) is None else str(values[col])
            if not text.strip():
                problem = f"{source}: id {rid!r}: empty text in column {col!r}"
                break
            fields[name] = text
        row: Row = {"id": rid, "fields": json.dumps(fields, ensure_ascii=False),
                    "truncated": False, "state": first, "votes": "[]", "rule": rule, "record": ""}
        if problem:
            rec = Record(rid, None, None, error=problem, error_kind="input")
            row.update(state="done", record=json.dumps(rec.to_json(), ensure_ascii=False))
        out.append(row)
    return out


# ---------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """One model's step: which model, its options, and which rows it acts on."""

    spec: str
    role: str  # "worker" or "judge"
    shape: Shape
    options: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    store: str | None = None  # the vote store's path on each node; None: no store
    states: tuple[str, ...] = ("vote",)


class ModelStage:
    """A model loaded once (per actor, or per process for server tasks) scoring the rows in its
    states: a worker adds its vote, the judge finishes the record."""

    def __init__(self, model: ModelSpec) -> None:
        from speculabel.cascade.build import load_backends

        self.model = model
        self.store = _open_store(model.store)
        backend = load_backends([model.spec], model.shape.task, {model.spec: model.options})[0]
        self.backend = wrap_backend(backend, self.store, model.calibration)

    def __call__(self, table: Any) -> Any:
        m = self.model
        return to_table(score_rows(to_rows(table), self.backend, m.role, m.states, m.shape))


def score_rows(rows: list[Row], backend: Backend, role: str, states: tuple[str, ...],
               shape: Shape) -> list[Row]:
    """One model on the rows in ``states`` (the judge: ``judge``): a worker adds its vote, the
    judge finishes the record; the other rows pass through."""
    todo = [r for r in rows if r["state"] in (("judge",) if role == "judge" else states)]
    if not todo:
        return rows
    votes = backend.score(shape.task, [row_item(r) for r in todo])
    for row, vote in zip(todo, votes, strict=True):
        if role == "judge":
            judge_row(row, vote, shape)
        else:
            row["votes"] = dump_votes([*load_votes(row["votes"]), vote])
    return rows


def _open_store(path: str | None) -> Any:
    """This node's vote store, or none when it cannot be opened here (the run goes on)."""
    if path is None:
        return None
    from speculabel.io.votes import VoteStore, VoteStoreError

    try:
        return VoteStore(path)
    except VoteStoreError as e:
        log.warning("no vote store on this node: %s", e)
        return None


class FusedStage:
    """Every model of the cascade loaded once in one actor; each batch goes through all the
    steps here (:func:`run_steps`), as the single-process cascade runs it."""

    def __init__(self, models: Sequence[ModelSpec], steps: Sequence[Step]) -> None:
        self.stages = {m.spec: ModelStage(m) for m in models}
        self.shape = models[0].shape
        self.steps = list(steps)

    def __call__(self, table: Any) -> Any:
        backends = {spec: st.backend for spec, st in self.stages.items()}
        return to_table(run_steps(to_rows(table), self.shape, self.steps, backends))


class WorkerStage(ModelStage):
    """A worker model's actor (its own class, so Ray's logs and process titles name the role)."""


class JudgeStage(ModelStage):
    """The judge's actor."""


_SERVER_STAGES: dict[str, ModelStage] = {}


@dataclass(frozen=True)
class ServerCall:
    """A model behind a server as a plain Ray task: the backend (an HTTP client) is made once per
    worker process and kept, so a task costs requests, not set-up."""

    model: ModelSpec

    def __call__(self, table: Any) -> Any:
        key = repr(self.model)
        stage = _SERVER_STAGES.get(key)
        if stage is None:
            stage = _SERVER_STAGES[key] = ModelStage(self.model)
        return stage(table)


# ---------------------------------------------------------------------- the rule and the judge
def decide_rows(rows: list[Row], shape: Shape, states: tuple[str, ...], undecided: str) -> list[Row]:
    """The rule on the votes so far (the one decide core): accepted rows get their record, the
    others go to ``undecided`` (``third`` under early exit, else ``judge``) with the rule's
    reason."""
    rules = shape.rules()
    todo = [row for row in rows if row["state"] in states]
    votes = [load_votes(row["votes"]) for row in todo]
    decided, escalations = decide_batch([row_item(row) for row in todo], votes, rules)
    for row, rec in zip(todo, decided, strict=True):
        if rec is not None:
            row.update(state="done", record=json.dumps(rec.to_json(), ensure_ascii=False))
    for esc in escalations:
        todo[esc.index].update(state=undecided, rule=esc.rule)
    return rows


@dataclass(frozen=True)
class DecideCall:
    """The acceptance rule as a plain Ray task (cheap: no model)."""

    shape: Shape
    states: tuple[str, ...]
    undecided: str

    def __call__(self, table: Any) -> Any:
        return to_table(decide_rows(to_rows(table), self.shape, self.states, self.undecided))


def judge_row(row: Row, jv: Vote, shape: Shape) -> None:
    """The judge's vote into the row's record (the one decide core), or ``pending`` for an
    unavailable judge: no shard record, so the next run asks again."""
    votes = load_votes(row["votes"])
    rules = shape.rules()
    esc = Escalation(0, row_item(row), votes, Decision(False, None, 0.0, row["rule"]), row["rule"])
    rec = settle(esc, jv, rules)
    if rec.error_kind == "no_judge":
        row["state"] = "pending"  # left for the next run; nothing written
        return
    row.update(state="done", record=json.dumps(rec.to_json(), ensure_ascii=False))


# ---------------------------------------------------------------------- the order of the steps
@dataclass(frozen=True)
class Step:
    """One step of the pipeline: a model (``spec``, ``role``) or the rule (``decide``), acting
    on the rows in ``states``; the rule sends what it does not accept to ``undecided``."""

    kind: str  # "model" or "decide"
    states: tuple[str, ...] = ("vote",)
    spec: str = ""
    role: str = ""
    undecided: str = "judge"


def plan_steps(shape: Shape, workers: Sequence[str], judge: str) -> list[Step]:
    """The steps in order, as :meth:`Cascade._run_batch` takes them: the workers (the first two
    under early exit), the rule, [the third worker on the undecided, the rule again], the judge."""
    first = list(workers[:2] if shape.early_exit else workers)
    steps = [Step("model", ("vote",), spec, "worker") for spec in first]
    if workers:
        steps.append(Step("decide", ("vote",), undecided="third" if shape.early_exit else "judge"))
        if shape.early_exit:
            steps.append(Step("model", ("third",), workers[2], "worker"))
            steps.append(Step("decide", ("third",), undecided="judge"))
    steps.append(Step("model", ("judge",), judge, "judge"))
    return steps


def run_steps(rows: list[Row], shape: Shape, steps: Sequence[Step],
              backends: dict[str, Backend]) -> list[Row]:
    """The same steps in this process, one after the other, with loaded backends (the tests
    compare this with :class:`Cascade`; the Ray engine runs each step as a Ray stage)."""
    for step in steps:
        if step.kind == "decide":
            rows = decide_rows(rows, shape, step.states, step.undecided)
        else:
            rows = score_rows(rows, backends[step.spec], step.role, step.states, shape)
    return rows


# ---------------------------------------------------------------------- writing
def summary_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("shard", pa.string()), ("records", pa.int64()), ("by_workers", pa.int64()),
                      ("judge_calls", pa.int64()), ("failures", pa.int64()),
                      ("pending", pa.int64()), ("truncated", pa.int64()),
                      ("latencies", pa.list_(pa.float64()))])


def finished_records(rows: Sequence[Row], run: str | None) -> list[dict[str, Any]]:
    """The records of the finished rows, stamped with the run's fingerprint."""
    out = []
    for row in rows:
        if row["state"] == "done":
            rec = json.loads(row["record"])
            if run is not None:
                rec["run"] = run
            out.append(rec)
    return out


def summarise(records: Sequence[dict[str, Any]], pending: int, shard: str) -> Row:
    return {
        "shard": shard, "records": len(records),
        "by_workers": sum(1 for r in records if not r["error"] and r["decided_by"] == "workers"),
        "judge_calls": sum(1 for r in records if not r["error"] and r["decided_by"] == "judge"),
        "failures": sum(1 for r in records if r["error"]),
        "pending": pending,
        "truncated": sum(1 for r in records if r["truncated"]),
        "latencies": [float(r["latency_s"]) for r in records if not r["error"]],
    }


@dataclass(frozen=True)
class WriteCall:
    """Write a batch's finished records as one shard (see :mod:`speculabel.scale.shards` for why
    that is idempotent) and hand the driver a one-row summary."""

    out: str
    fmt: str
    run: str

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        from speculabel.scale.shards import write_shard

        rows = to_rows(table)
        records = finished_records(rows, self.run)
        pending = sum(1 for r in rows if r["state"] == "pending")
        shard = write_shard(self.out, records, self.fmt) if records else ""
        return pa.Table.from_pylist([summarise(records, pending, shard)], schema=summary_schema())


@dataclass(frozen=True)
class RecordsCall:
    """Finished rows as rows of the record schema (what :func:`classify_dataset` returns)."""

    run: str | None = None

    def __call__(self, table: Any) -> Any:
        from speculabel.scale.shards import records_table

        return records_table(finished_records(to_rows(table), self.run))
