"""The service's parts without HTTP: the audit's confidence sequence and states, the log, the
request schema, and the batcher over a real :class:`Cascade` of cheap function backends."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from speculabel.backends.base import FunctionBackend
from speculabel.cascade import Cascade
from speculabel.policy import make_policy
from speculabel.records import Item, Record
from speculabel.serve.audit import Audit, AuditSettings, Sequence, step_bounds
from speculabel.serve.batcher import Batcher, Closed
from speculabel.serve.log import LogError, ServeLog
from speculabel.serve.metrics import Metrics
from speculabel.serve.schema import BadRequest, parse_body
from speculabel.tasks import SENTIMENT, load_task

# ---------------------------------------------------------------------------- audit


def test_step_bounds_are_clopper_pearson_at_the_spent_level() -> None:
    from scipy.stats import beta

    lo, hi = step_bounds(90, 100, 0.05)
    a = 0.05 / (2 * 100 * 101)
    assert lo == pytest.approx(beta.ppf(a, 90, 11))
    assert hi == pytest.approx(beta.ppf(1 - a, 91, 10))
    assert step_bounds(0, 0, 0.05) == (0.0, 1.0)


def test_the_sequence_covers_p_at_every_look_at_least_1_minus_alpha() -> None:
    """Simulated: the share of streams whose bounds ever exclude the true p stays <= alpha."""
    rng = random.Random(0)
    p, alpha, misses = 0.85, 0.2, 0
    for _ in range(150):
        seq = Sequence()
        for _ in range(150):
            seq.observe(rng.random() < p, alpha)
            if not seq.lower <= p <= seq.upper:
                misses += 1
                break
    assert misses / 150 <= alpha


def test_a_refuted_certificate_is_reported_then_recertified_with_fallback() -> None:
    audit = Audit(AuditSettings(target=0.8, scope="workers", rate=1.0, alpha=0.05, fallback=True))
    events = [ev for _ in range(40) if (ev := audit.observe(False))]
    assert audit.state == "violated" and audit.force_judge
    assert len(events) == 1 and events[0]["change"] == "violated"
    assert "refuted" in events[0]["message"] and "every item goes to the judge" in events[0]["message"]
    assert audit.seq.n < 40  # a fresh sequence started at the violation
    events = [ev for _ in range(400) if (ev := audit.observe(True))]
    assert [e["change"] for e in events] == ["re-certified"]
    assert audit.state == "confirmed" and not audit.force_judge
    assert audit.seq.lower >= 0.8


def test_a_lower_bound_below_target_alone_is_not_a_violation() -> None:
    audit = Audit(AuditSettings(target=0.9, rate=1.0))
    for ok in [True] * 9 + [False]:
        assert audit.observe(ok) is None
    assert audit.state == "checking" and audit.seq.lower < 0.9 <= audit.seq.upper


def test_audit_restores_only_a_snapshot_of_the_same_promise() -> None:
    a = Audit(AuditSettings(target=0.8, rate=1.0))
    for ok in [True, True, False]:
        a.observe(ok)
    b = Audit(AuditSettings(target=0.8, rate=1.0))
    assert b.restore(json.loads(json.dumps(a.snapshot())))
    assert (b.seq.n, b.seq.k, b.seq.lower) == (3, 2, a.seq.lower)
    assert not Audit(AuditSettings(target=0.9, rate=1.0)).restore(a.snapshot())


def test_audit_draws_from_the_scope_share_only() -> None:
    w = Record("1", "positive", "workers")
    j = Record("2", "negative", "judge")
    bad = Record(None, None, None, error="x", error_kind="input")
    workers = Audit(AuditSettings(target=0.8, scope="workers", rate=1.0))
    assert workers.draw([w, j, bad], 0) == [0]
    dataset = Audit(AuditSettings(target=0.8, scope="dataset", rate=1.0, max_queue=5))
    assert dataset.draw([w, j, bad], 0) == [0, 1]
    assert dataset.draw([w, j, bad], 5) == []  # queue full: the whole batch is skipped


# ---------------------------------------------------------------------------- log


def test_log_cuts_a_torn_line_refuses_other_files_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = ServeLog(path)
    log.open({"x": "http://user:secret-pass@host/v1"})
    log.append_batch([("r1", [Record("a", "positive", "workers"), Record("b", "neutral", "judge")])],
                     [])
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "request": "r2", "id": "tor')  # a kill mid-write
    again = ServeLog(path)
    again.open({})
    assert again.next_seq == 2 and again.cut_bytes > 0
    again.append_batch([("r3", [Record("c", "negative", "workers")])], [])
    again.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["seq"] for x in lines if "seq" in x] == [0, 1, 2]
    assert [x["id"] for x in lines if "seq" in x] == ["a", "b", "c"]
    assert "secret-pass" not in path.read_text()
    table = tmp_path / "input.csv"
    table.write_text("id,text\n1,hello\n")
    with pytest.raises(LogError, match="not a speculabel serve log"):
        ServeLog(table).open({})
    assert table.read_text() == "id,text\n1,hello\n"


# ---------------------------------------------------------------------------- schema


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "body"),
    (b"[1, 2]", 422, "body"),
    (b'{"items": [], "extra": 1}', 422, "extra"),
    (b'{"itemz": []}', 422, "itemz"),
    (b"{}", 422, "items"),
    (b'{"items": {"text": "x"}}', 422, "items"),
    (b'{"items": ["x"]}', 422, "items[0]"),
    (b'{"items": [{"text": "ok"}, {"txt": "x"}]}', 422, "items[1].txt"),
    (b'{"items": [{"id": 1}]}', 422, "items[0].text"),
    (b'{"items": [{"text": 5}]}', 422, "items[0].text"),
    (b'{"items": [{"text": "a", "id": [1]}]}', 422, "items[0].id"),
    (b'{"items": [{"text": "a", "text_b": "b"}]}', 422, "items[0].text_b"),
    (json.dumps({"items": [{"text": "a"}] * 4}).encode(), 413, "items"),
])
def test_a_bad_body_names_its_field(body: bytes, status: int, field: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_body(body, SENTIMENT, max_items=3)
    assert (e.value.status, e.value.field) == (status, field)


def test_items_keep_their_ids_and_pairs_their_two_texts() -> None:
    items = parse_body(b'{"items": [{"id": 7, "text": "a"}, {"text": ""}]}', SENTIMENT, 10)
    assert [(i.id, i.fields) for i in items] == [("7", {"text": "a"}), ("1", {"text": ""})]
    pair = load_task("similar-ticket")
    got = parse_body(b'{"items": [{"text_a": "a", "text_b": "b"}]}', pair, 10)
    assert got[0].fields == {"text_a": "a", "text_b": "b"}


# ---------------------------------------------------------------------------- batcher


def keyword(task: object, items: list[Item]) -> list[dict[str, float]]:
    out = []
    for it in items:
        t = it.fields["text"]
        lab = "positive" if "good" in t else "negative" if "bad" in t else "neutral"
        out.append({x: 0.8 if x == lab else 0.1 for x in ("negative", "neutral", "positive")})
    return out


def judge_says_negative(task: object, items: list[Item]) -> list[dict[str, float]]:
    return [{"negative": 0.9, "neutral": 0.05, "positive": 0.05} for _ in items]


def make_batcher(tmp_path: Path, audit: Audit | None = None) -> tuple[Batcher, ServeLog]:
    calls: list[int] = []

    def worker(task: object, items: list[Item]) -> list[dict[str, float]]:
        calls.append(len(items))
        return keyword(task, items)

    def load() -> Cascade:
        return Cascade(SENTIMENT, [FunctionBackend("w", worker)],
                       FunctionBackend("j", judge_says_negative), make_policy("majority"),
                       batch_size=64)

    log = ServeLog(tmp_path / "log.jsonl")
    log.open({})
    b = Batcher(load, log, Metrics(), audit, max_wait_s=0.05)
    b.calls = calls  # type: ignore[attr-defined]
    return b, log


def test_concurrent_requests_share_batches_and_get_their_own_records_in_order(tmp_path: Path) -> None:
    b, _ = make_batcher(tmp_path)
    b.start()
    assert b.ready.wait(10)
    results: dict[int, list[Record]] = {}

    def client(c: int) -> None:
        items = [Item(f"{c}-{i}", {"text": ["good", "bad", "meh"][(c + i) % 3]}) for i in range(5)]
        results[c] = b.submit(f"r{c}", items).result(10)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    for c, recs in results.items():
        assert [r.id for r in recs] == [f"{c}-{i}" for i in range(5)]
        assert [r.label for r in recs] == [["positive", "negative", "neutral"][(c + i) % 3]
                                           for i in range(5)]
    assert sum(b.calls) == 40 and len(b.calls) < 8  # type: ignore[attr-defined]
    with pytest.raises(Closed):
        b.submit("late", [Item("x", {"text": "good"})])
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines if "seq" in x) == sorted(f"{c}-{i}" for c in range(8)
                                                                  for i in range(5))
    assert lines[-1]["event"] == "stop"


def test_a_refuted_certificate_sends_every_item_to_the_judge(tmp_path: Path) -> None:
    audit = Audit(AuditSettings(target=0.9, scope="workers", rate=1.0, alpha=0.1, fallback=True,
                                seed=1))
    b, _ = make_batcher(tmp_path, audit)
    b.start()
    assert b.ready.wait(10)
    for n in range(12):  # the judge says negative; the workers say positive: all disagree
        b.submit(f"r{n}", [Item(f"{n}-{i}", {"text": "good"}) for i in range(4)]).result(10)
        if audit.force_judge:
            break
    assert audit.state == "violated" and audit.force_judge
    recs = b.submit("after", [Item("z", {"text": "good"})]).result(10)
    assert recs[0].decided_by == "judge" and recs[0].label == "negative"
    assert "audit fallback" in recs[0].rule
    b.close()
    text = (tmp_path / "log.jsonl").read_text()
    assert '"change": "violated"' in text
    assert b.metrics.audit is not None and b.metrics.audit["audit"]["force_judge"]
    assert b'speculabel_audit_state{state="violated"} 1.0' in b.metrics.render()
