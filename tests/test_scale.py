"""The Ray engine's parts that need no cluster: its steps against the single-process cascade, the
results directory (manifest, refusals, idempotent shards, resume, repair), its settings and the
CLI's refusals.  Runs on a real Ray instance with real models: test_ray.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

import needs
from speculabel.backends.base import Backend
from speculabel.cascade.config import make_config
from speculabel.cascade.run import Cascade
from speculabel.io.results import ResultsError, RunInfo
from speculabel.policy import make_policy
from speculabel.records import Item, Record, Vote
from speculabel.scale.ray_engine import plan_layout, shape_of
from speculabel.scale.reading import input_format
from speculabel.scale.settings import (
    EngineError,
    RaySettings,
    check_engine,
    check_ray_setup,
    make_ray_settings,
    pop_ray_table,
)
from speculabel.scale.shards import (
    MANIFEST,
    ShardDir,
    decode_shard,
    encode_shard,
    read_records,
    shard_name,
    write_shard,
)
from speculabel.scale.stages import (
    finished_records,
    plan_steps,
    prepare_rows,
    run_steps,
)
from speculabel.tasks import SENTIMENT, Task

TEXTS = ["good", "bad", "meh", "good bad", "fine", "awful", "great", "so so", "down"]


class Fixed(Backend):
    """A model answering from a table (text -> label, confidence), with a fixed latency, that
    may abstain (label None) retryably or not."""

    def __init__(self, name: str, table: dict[str, tuple[str | None, float]], latency: float,
                 retryable: bool = False) -> None:
        self.spec, self.table, self.latency, self.retryable = name, table, latency, retryable

    def fingerprint(self) -> str:
        return self.spec

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        out = []
        for it in items:
            label, p = self.table.get(it.fields["text"], ("neutral", 0.5))
            if label is None:
                out.append(Vote.abstain(self.spec, "down", latency_s=self.latency,
                                        retryable=self.retryable))
                continue
            rest = (1 - p) / 2
            out.append(Vote.from_probs(self.spec, {x: p if x == label else rest
                                                   for x in task.label_names},
                                       latency_s=self.latency, method="classifier"))
        return out


def _table(labels: list[str | None], ps: list[float]) -> dict[str, tuple[str | None, float]]:
    return dict(zip(TEXTS, zip(labels, ps, strict=True), strict=True))


W1 = Fixed("w1", _table(["positive", "negative", "neutral", "positive", "positive", "negative",
                         "positive", None, "negative"], [0.9, 0.8, 0.5, 0.6, 0.7, 0.95, 0.99, 0, 0.6]),
           0.011)
W2 = Fixed("w2", _table(["positive", "positive", "neutral", "negative", "neutral", "negative",
                         "positive", "neutral", "negative"], [0.7, 0.6, 0.4, 0.9, 0.5, 0.9, 0.8, 0.6, 0.5]),
           0.023)
W3 = Fixed("w3", _table(["neutral", "negative", "positive", "negative", "positive", "negative",
                         "neutral", "neutral", "positive"], [0.6, 0.7, 0.8, 0.5, 0.9, 0.6, 0.5, 0.5, 0.7]),
           0.037)
JUDGE = Fixed("judge", _table(["positive", "negative", "neutral", "negative", None, "negative",
                               "positive", "neutral", "negative"], [0.9] * 9), 0.5)
JUDGE_DOWN = Fixed("judge", _table([None] * 9, [0.0] * 9), 0.5, retryable=True)


def _compare(workers: list[Backend], judge: Backend, **cfg_kw: object) -> list[dict[str, object]]:
    """The Ray steps, run in this process, against :class:`Cascade`: the same records."""
    cfg = make_config({"workers": [w.spec for w in workers], "judge": judge.spec, **cfg_kw})
    items = [Item(str(i), {"text": t}) for i, t in enumerate(TEXTS)]
    cascade = Cascade(SENTIMENT, workers, judge,
                      make_policy(cfg.policy, cfg.threshold, weights=cfg.weights),
                      early_exit=cfg.early_exit, parallel_workers=cfg.parallel_workers,
                      batch_size=4, retry_wait_s=0)
    expected = [r.to_json() for r in cascade.classify(items)]
    shape = shape_of(cfg, SENTIMENT)
    raw = [{"id": it.id, "text": it.fields["text"]} for it in items]
    got: list[dict[str, object]] = []
    for start in range(0, len(raw), 4):  # batches, as the Ray stages see them
        rows = prepare_rows(raw[start:start + 4], shape, {}, "id", "in.csv")
        steps = plan_steps(shape, [w.spec for w in workers], judge.spec)
        rows = run_steps(rows, shape, steps, {b.spec: b for b in [*workers, judge]})
        got.extend(finished_records(rows, None))
    # an item the judge could not answer: the cascade's record is retryable (the CLI's rerun
    # decides it again); the Ray stages write none, so the rerun finds the id missing
    expected = [r for r in expected if r.get("error_kind") != "no_judge"]
    assert sorted(got, key=lambda r: str(r["id"])) == sorted(expected, key=lambda r: str(r["id"]))
    return got


def test_steps_equal_the_cascade_majority() -> None:
    got = _compare([W1, W2], JUDGE, policy="majority")
    assert {r["decided_by"] for r in got} == {"workers", "judge"}
    assert any(r["error_kind"] == "judge" for r in got if "error_kind" in r)


def test_steps_equal_the_cascade_confident_and_parallel() -> None:
    _compare([W1, W2, W3], JUDGE, policy="confident-majority", threshold=0.7, parallel_workers=True)


def test_steps_equal_the_cascade_early_exit() -> None:
    got = _compare([W1, W2, W3], JUDGE, policy="majority", early_exit=True, parallel_workers=True)
    assert {len(r["votes"]) for r in got} == {2, 3}  # type: ignore[arg-type]


def test_steps_equal_the_cascade_judge_only_and_judge_down() -> None:
    _compare([], JUDGE, judge_only=True)
    got = _compare([W1, W2], JUDGE_DOWN, policy="unanimous")
    assert len(got) < len(TEXTS)  # the escalated items are pending: no record


def test_prepare_skips_done_ids_and_records_empty_texts() -> None:
    shape = shape_of(make_config({"workers": ["vader"], "judge": "smollm2-135m"}), SENTIMENT)
    raw = [{"key": 7, "body": "nice"}, {"key": "8", "body": "  "}, {"key": " 9 ", "body": "ok"}]
    rows = prepare_rows(raw, shape, {"text": "body"}, "key", "in.csv", frozenset({"9"}))
    assert [r["id"] for r in rows] == ["7", "8"]
    assert rows[0]["state"] == "vote" and json.loads(rows[0]["fields"]) == {"text": "nice"}
    rec = json.loads(rows[1]["record"])
    assert rows[1]["state"] == "done" and rec["error_kind"] == "input"
    assert "empty text in column 'body'" in rec["error"]


# ---------------------------------------------------------------------- the results directory
def _run(**settings: object) -> RunInfo:
    return RunInfo(settings={"task": "sentiment", **settings}, input={"path": "/x.csv"})


def _rec(i: int, label: str = "positive") -> dict[str, object]:
    vote = Vote.from_probs("vader", {"negative": 0.1, "neutral": 0.2, "positive": 0.7})
    return Record(str(i), label, "workers", votes=[vote], rule="majority: 1/1", run="r").to_json()


def test_shard_names_make_writes_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    d = ShardDir(str(out), _run())
    d.start()
    first = write_shard(str(out), [_rec(1), _rec(2)], "jsonl")
    again = write_shard(str(out), [_rec(2), _rec(1, "negative")], "jsonl")  # a retried task
    assert first == again == shard_name(["2", "1"], "jsonl")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, first]
    recs = read_records(str(out))
    assert [r.id for r in recs] == ["2", "1"] and recs[1].label == "negative"


def test_parquet_shards_hold_the_same_records() -> None:
    recs = [_rec(1), {**_rec(2), "error": "x", "error_kind": "input", "votes": []}]
    back = decode_shard(encode_shard(recs, "parquet"), "parquet", "p")
    assert [Record.from_json(r).to_json() for r in back] == recs
    assert decode_shard(encode_shard(recs, "jsonl"), "jsonl", "j") == recs


def test_resume_skips_done_ids_and_removes_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    d = ShardDir(str(out), _run())
    d.start()
    write_shard(str(out), [_rec(1), _rec(2)], "jsonl")
    (out / ".part-abc.jsonl.123.tmp").write_text('{"id": "3"')  # a write a kill cut short
    again = ShardDir(str(out), _run())
    assert set(again.done) == {"1", "2"}
    again.start()
    assert not list(out.glob(".*.tmp"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert len(manifest["runs"]) == 1 and manifest["runs"][0]["run"] == _run().fingerprint


def test_dedupe_keeps_one_record_per_id(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ShardDir(str(out), _run()).start()
    write_shard(str(out), [_rec(1), _rec(2)], "jsonl")
    write_shard(str(out), [_rec(2), _rec(3)], "parquet")  # a late task of a killed driver
    d = ShardDir(str(out), _run())
    assert d.duplicates == 1
    d.start()
    ids = [r.id for r in read_records(str(out))]
    assert sorted(ids) == ["1", "2", "3"] and d.duplicates == 0


def test_results_directory_refusals(tmp_path: Path) -> None:
    a_file = tmp_path / "out.jsonl"
    a_file.write_text("{}\n")
    with pytest.raises(ResultsError, match="is a file"):
        ShardDir(str(a_file), _run())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a\n1\n")
    with pytest.raises(ResultsError, match="not a speculabel results directory"):
        ShardDir(str(foreign), _run())
    assert (foreign / "data.csv").read_text() == "a\n1\n"
    out = tmp_path / "out"
    ShardDir(str(out), _run(policy="majority")).start()
    with pytest.raises(ResultsError, match="policy: then 'majority', now 'unanimous'"):
        ShardDir(str(out), _run(policy="unanimous"))
    d = ShardDir(str(out), _run(policy="unanimous"), allow_changed_run=True)
    d.start()
    assert len(json.loads((out / MANIFEST).read_text())["runs"]) == 2


# ---------------------------------------------------------------------- settings
def test_check_engine() -> None:
    check_engine("local", adaptive=True)
    check_engine("ray", adaptive=False)
    with pytest.raises(EngineError, match="adaptive runs are single-process; calibrate first"):
        check_engine("ray", adaptive=True)
    with pytest.raises(EngineError, match="unknown engine 'spark'"):
        check_engine("spark", adaptive=False)


def test_ray_settings_from_table_and_flags() -> None:
    data = {"workers": ["vader"], "ray": {"pool_size": 2, "cpus_per_actor": 1}}
    table = pop_ray_table(data, "c.toml")
    assert "ray" not in data
    s = make_ray_settings(table, {"pool_size": 3, "address": None}, "c.toml")
    assert s.pool_size == 3 and s.cpus_per_actor == 1.0 and s.address is None
    with pytest.raises(EngineError, match=r"unknown key ray\.pool"):
        make_ray_settings({"pool": 2}, {}, "c.toml")
    with pytest.raises(EngineError, match=r"ray\.shard_format"):
        make_ray_settings({"shard_format": "csv"}, {}, "c.toml")


def test_load_configs_reads_the_ray_table(tmp_path: Path) -> None:
    from speculabel.scale import load_configs

    p = tmp_path / "cascade.toml"
    p.write_text('workers = ["vader"]\njudge = "smollm2-135m"\n[ray]\nshard_rows = 9\n')
    cfg, settings = load_configs(p)
    assert cfg.workers == ["vader"] and settings.shard_rows == 9


def test_ray_setup_refusals() -> None:
    cfg = make_config({"workers": ["vader", "smollm2-135m"], "judge": "gemma3-270m"})
    check_ray_setup(cfg, "id")
    with pytest.raises(EngineError, match="needs --id-column"):
        check_ray_setup(cfg, None)
    learning = make_config({"workers": ["vader", "learner:minilm"], "judge": "gemma3-270m"})
    with pytest.raises(EngineError, match="learns from the judge's labels"):
        check_ray_setup(learning, "id")


def test_layout_shares_the_cpus_and_refuses_too_many() -> None:
    cfg = make_config({"workers": ["vader", "smollm2-135m"], "judge": "gemma3-270m"})
    layout = plan_layout(cfg, RaySettings(fused=False), 2.0)
    assert layout.actors == 3 and layout.worker_cpus == layout.judge_cpus == 0.33
    # by default two cores are not split into slivers: one actor holds every model
    fused = plan_layout(cfg, RaySettings(), 2.0)
    assert fused.fused and fused.actors == 1 and fused.worker_cpus == 1.8
    assert not plan_layout(cfg, RaySettings(), 16.0).fused
    assert plan_layout(cfg, RaySettings(), 16.0).worker_cpus == 1.0
    with pytest.raises(EngineError, match="fused actors need 4 CPUs"):
        plan_layout(cfg, RaySettings(fused=True, pool_size=2, cpus_per_actor=2.0), 2.0)
    served = make_config({"workers": ["vader", "openai:m@http://127.0.0.1:1/v1"],
                          "judge": "gemma3-270m"})
    assert plan_layout(served, RaySettings(), 2.0).actors == 2  # the server's model: tasks
    with pytest.raises(EngineError, match="need 5 CPUs \\(5 actors\\)"):
        plan_layout(cfg, RaySettings(pool_size=2, cpus_per_actor=1.0), 2.0)


def test_input_format(tmp_path: Path) -> None:
    assert input_format("s3://b/data.PARQUET") == "parquet"
    assert input_format("x.tsv") == "tsv" and input_format("x.ndjson") == "json"
    d = tmp_path / "parts"
    d.mkdir()
    (d / "a.parquet").write_bytes(b"")
    (d / "_SUCCESS").write_bytes(b"")
    assert input_format(str(d)) == "parquet"
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        input_format("x.txt")


# ---------------------------------------------------------------------- the command
runner = CliRunner()


@pytest.fixture
def tweets(tmp_path: Path) -> Path:
    p = tmp_path / "in.csv"
    p.write_text("id,text\na,I love it\nb,awful day\n")
    return p


def test_cli_ray_needs_an_id_column(tweets: Path, tmp_path: Path) -> None:
    res = runner.invoke(app(), ["classify", str(tweets), "-o", str(tmp_path / "o"),
                                "--engine", "ray", "--judge-only", "--judge", "vader"])
    assert res.exit_code == 2 and "needs --id-column" in res.output


def test_cli_ray_flags_need_the_ray_engine(tweets: Path, tmp_path: Path) -> None:
    res = runner.invoke(app(), ["classify", str(tweets), "-o", str(tmp_path / "o.jsonl"),
                                "--pool-size", "2", "--judge-only", "--judge", "vader"])
    assert res.exit_code == 2 and "--pool-size: only with --engine ray" in res.output
    res = runner.invoke(app(), ["classify", str(tweets), "-o", str(tmp_path / "o.jsonl"),
                                "--engine", "spark"])
    assert res.exit_code == 2 and "unknown engine 'spark'" in res.output


def test_cli_ray_refuses_an_output_that_is_not_a_results_directory(tweets: Path,
                                                                   tmp_path: Path) -> None:
    needs.module("ray.data", needs.RAY)
    base = ["classify", str(tweets), "--engine", "ray", "--id-column", "id", "--judge-only",
            "--judge", "vader", "--no-votes"]
    res = runner.invoke(app(), [*base, "-o", str(tweets)])
    assert res.exit_code == 2 and "is the input" in res.output
    other = tmp_path / "o.jsonl"
    other.write_text("hello\n")
    res = runner.invoke(app(), [*base, "-o", str(other)])
    assert res.exit_code == 2 and "writes a directory of record shards" in res.output
    assert other.read_text() == "hello\n"


def test_a_config_with_a_ray_table_runs_in_one_process_too(tweets: Path, tmp_path: Path) -> None:
    needs.module("vaderSentiment", needs.BENCH)
    cfg = tmp_path / "cascade.toml"
    cfg.write_text('judge_only = true\njudge = "vader"\n[ray]\npool_size = 2\n')
    out = tmp_path / "o.jsonl"
    res = runner.invoke(app(), ["classify", str(tweets), "-o", str(out), "--config", str(cfg),
                                "--id-column", "id", "--no-votes", "-q"])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('judge_only = true\njudge = "vader"\n[ray]\npool = 2\n')
    res = runner.invoke(app(), ["classify", str(tweets), "-o", str(out), "--config", str(bad)])
    assert res.exit_code == 2 and "unknown key ray.pool" in res.output


def app() -> object:
    from speculabel.cli import app as the_app

    return the_app


# ---------------------------------------------------------------------- a cluster's throughput
def test_items_per_hour_for_the_paper_setup_and_for_nodes_like_this_one() -> None:
    from speculabel.scale.throughput import (
        ModelRate,
        items_per_hour,
        nodes_like_this_one,
        paper_cluster,
    )

    table = paper_cluster([0.1], worker_rate=700.0, judge_replica_rate=190.0, judge_gpus=2,
                          gpus_per_node=8)
    # the judge alone: four 2-GPU replicas of 190 items/s fill a node
    alone = table["by_judge_rate"]["judge alone"]
    assert alone[0]["placement"] == {"judge-32b": 4}
    assert alone[0]["items_per_hour_placed"] == 4 * 190 * 3600
    # at a judge-call rate of 0.1 two replicas per worker (1,400 items/s) set the pace, below the
    # judge's 190 / 0.1; throughput grows with the nodes
    rows = table["by_judge_rate"]["0.1"]
    assert rows[0]["placement"] == {"worker-3b-1": 2, "worker-3b-2": 2, "worker-3b-3": 2,
                                    "judge-32b": 1}
    assert rows[0]["items_per_hour_placed"] == 2 * 700 * 3600
    assert [r["items_per_hour_placed"] for r in rows] == [r["nodes"] * 2 * 700 * 3600
                                                          for r in rows]
    assert all(r["items_per_hour_bound"] >= r["items_per_hour_placed"] for r in rows)

    measured = {"per_model_s": {"vader": 0.0001, "gemma3-270m": 0.1, "qwen2.5-1.5b": 0.5},
                "local": {"judge_call_rate": 0.5}}
    per_node = nodes_like_this_one(measured, "qwen2.5-1.5b")
    assert per_node[0] == {"nodes": 1, "items_per_hour": round(3600 / (0.0001 + 0.1 + 0.25))}
    assert per_node[-1]["nodes"] == 16
    with pytest.raises(ValueError, match="need 3 devices"):
        items_per_hour([ModelRate("a", 1.0), ModelRate("b", 1.0, devices=2)], 1, 2,
                       {"a": 1, "b": 1})
