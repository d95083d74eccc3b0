"""Escalation and provenance with plain-Python workers (pure logic; real models: test_cli_e2e)."""

from __future__ import annotations

from collections.abc import Sequence

from speculabel.backends.base import Backend, FunctionBackend
from speculabel.cascade.run import Cascade
from speculabel.policy import ConfidentMajority, Majority
from speculabel.records import Item, Vote
from speculabel.tasks import SENTIMENT, Task

ITEMS = [Item(str(i), {"text": t}) for i, t in enumerate(["good", "bad", "meh", "good bad"])]


def rule(table: dict[str, str], p: float = 0.9) -> FunctionBackend:
    """A worker answering from a lookup table (text -> label) with confidence p."""

    def fn(task: Task, items: Sequence[Item]) -> list[dict[str, float]]:
        out = []
        for it in items:
            lab = table[it.fields["text"]]
            rest = (1 - p) / 2
            out.append({x: (p if x == lab else rest) for x in task.label_names})
        return out

    return FunctionBackend(f"rule{id(table) % 997}", fn)


class Counting(Backend):
    def __init__(self, inner: Backend, name: str) -> None:
        self.inner, self.spec, self.calls = inner, name, 0

    def fingerprint(self) -> str:
        return self.spec

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        self.calls += len(items)
        return [Vote(**{**v.__dict__, "model": self.spec}) for v in self.inner.score(task, items)]


A = {"good": "positive", "bad": "negative", "meh": "neutral", "good bad": "positive"}
B = {"good": "positive", "bad": "negative", "meh": "positive", "good bad": "negative"}
C = {"good": "positive", "bad": "neutral", "meh": "negative", "good bad": "negative"}
J = {"good": "positive", "bad": "negative", "meh": "neutral", "good bad": "neutral"}


def test_escalation_and_provenance() -> None:
    judge = Counting(rule(J), "judge")
    c = Cascade(SENTIMENT, [Counting(rule(A), "a"), Counting(rule(B), "b")], judge, Majority())
    recs = {r.id: r for r in c.classify(ITEMS)}
    assert recs["0"].decided_by == "workers" and recs["0"].label == "positive"
    assert recs["0"].judge_vote is None and [v.model for v in recs["0"].votes] == ["a", "b"]
    assert recs["2"].decided_by == "judge" and recs["2"].label == "neutral"
    assert recs["2"].judge_vote is not None and recs["2"].judge_vote.model == "judge"
    assert recs["3"].label == "neutral"
    assert judge.calls == 2
    assert c.stats.judge_rate == 0.5


def test_early_exit_asks_third_only_on_disagreement() -> None:
    third = Counting(rule(C), "c")
    c = Cascade(
        SENTIMENT, [Counting(rule(A), "a"), Counting(rule(B), "b"), third],
        Counting(rule(J), "judge"), Majority(), early_exit=True, batch_size=4,
    )
    recs = {r.id: r for r in c.classify(ITEMS)}
    assert third.calls == 2  # items "meh" and "good bad"
    assert len(recs["0"].votes) == 2 and len(recs["3"].votes) == 3
    # "good bad": a=positive b=negative c=negative -> 2 of 3
    assert recs["3"].decided_by == "workers" and recs["3"].label == "negative"


def test_confidence_threshold_escalates() -> None:
    judge = Counting(rule(J), "judge")
    c = Cascade(SENTIMENT, [rule(A, 0.5), rule(dict(A), 0.5)], judge, ConfidentMajority(0.8))
    recs = c.classify(ITEMS)
    assert all(r.decided_by == "judge" for r in recs) and judge.calls == 4


class Down(Backend):
    spec = "down"

    def fingerprint(self) -> str:
        return "down"

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        return [Vote.abstain("down", "unavailable: connection refused", retryable=True)
                for _ in items]


def test_judge_down_gives_every_item_a_record_and_counts_it_pending() -> None:
    c = Cascade(SENTIMENT, [rule(A), rule(B)], Down(), Majority(), retry_wait_s=0)
    recs = c.classify(ITEMS)
    assert [r.id for r in recs] == ["0", "1", "2", "3"]
    assert [r.decided_by for r in recs] == ["workers", "workers", None, None]
    assert [r.error_kind for r in recs[2:]] == ["no_judge", "no_judge"]
    assert all(r.retryable and "judge unavailable" in (r.error or "") for r in recs[2:])
    assert c.stats.pending == 2 and c.stats.errors == 0


def test_a_judge_abstention_that_is_not_retryable_is_a_final_error_record() -> None:
    class Refuses(Backend):
        spec = "refuses"

        def fingerprint(self) -> str:
            return "refuses"

        def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
            return [Vote.abstain("refuses", "unavailable: but said as text only") for _ in items]

    c = Cascade(SENTIMENT, [rule(A), rule(B)], Refuses(), Majority())
    recs = {r.id: r for r in c.classify(ITEMS)}
    # only the typed flag leaves an item pending; a message that merely says so does not
    assert c.stats.pending == 0 and recs["2"].error_kind == "judge" and recs["2"].label is None


def test_worker_down_abstains_and_rule_uses_the_rest() -> None:
    c = Cascade(SENTIMENT, [rule(A), rule(B), Down()], Counting(rule(J), "judge"), Majority())
    recs = {r.id: r for r in c.classify(ITEMS)}
    assert recs["0"].decided_by == "workers"
    assert recs["0"].votes[2].label is None and "unavailable" in (recs["0"].votes[2].error or "")


class DictCache:
    def __init__(self) -> None:
        self.d: dict[tuple[str, str, str], Vote] = {}

    def get_many(self, model_fp: str, task_fp: str, keys: Sequence[str]) -> dict[str, Vote]:
        return {k: self.d[(model_fp, task_fp, k)] for k in keys if (model_fp, task_fp, k) in self.d}

    def put_many(self, model_fp: str, task_fp: str, rows: Sequence[tuple[str, Vote]]) -> None:
        for k, v in rows:
            self.d[(model_fp, task_fp, k)] = v


def test_vote_store_avoids_second_model_call() -> None:
    cache = DictCache()
    a, b, j = Counting(rule(A), "a"), Counting(rule(B), "b"), Counting(rule(J), "judge")
    Cascade(SENTIMENT, [a, b], j, Majority(), vote_store=cache).classify(ITEMS)
    assert (a.calls, j.calls) == (4, 2)
    recs = Cascade(SENTIMENT, [a, b], j, Majority(), vote_store=cache).classify(ITEMS)
    assert (a.calls, j.calls) == (4, 2)
    assert all(v.cached for r in recs for v in r.votes)


class Learner(FunctionBackend):
    def __init__(self) -> None:
        super().__init__("learner", lambda task, items: [{"neutral": 1.0} for _ in items])
        self.seen: list[tuple[str, str]] = []

    def observe(self, items: Sequence[Item], labels: Sequence[str]) -> None:
        self.seen += [(it.id, lab) for it, lab in zip(items, labels, strict=True)]


def test_learning_worker_is_fed_judge_labels() -> None:
    learner = Learner()
    Cascade(SENTIMENT, [rule(A), learner], rule(J), Majority()).classify(ITEMS)
    assert learner.seen == [("0", "positive"), ("1", "negative"), ("3", "neutral")]
