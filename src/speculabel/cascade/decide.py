"""The one place where votes become decisions and records: decide a batch.

Every path that runs a cascade calls these functions, so a rule, a latency charge or a record
field cannot drift between them: :class:`speculabel.cascade.Cascade` (the library and the CLI),
the Ray stages (:mod:`speculabel.scale.stages`), the bench's replay over stored votes
(:mod:`speculabel.bench.simulate`) and adaptive runs (:mod:`speculabel.adaptive.run`).

The flow is one way: ``votes -> decide_batch -> (records of accepted items, escalations) ->
settle(escalation, judge vote) -> record``.  Nothing here calls a model: the caller asks the
models (the third worker under early exit through ``ask_third``) and hands the votes in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from speculabel.policy import Decision, Policy
from speculabel.records import Item, Record, Vote, probability_problem
from speculabel.tasks import Task

JUDGE_ONLY = "judge only"


@dataclass(frozen=True)
class Rules:
    """How a cascade decides and charges time: its rule, its worker count and how workers run.

    ``free_cached``: a vote served from the vote store costs nothing (a live run); the bench's
    replay charges every vote its recorded latency (``False``), the cost of a cold run.
    """

    policy: Policy
    n_workers: int
    parallel: bool = False
    early_exit: bool = False
    free_cached: bool = True

    def latency(self, votes: Sequence[Vote]) -> float:
        """The workers' share of an item's latency: the sum when they are asked one after the
        other; the slowest when asked together; under early exit the first two together, then
        the third."""
        lats = [0.0 if (v.cached and self.free_cached) else v.latency_s for v in votes]
        if not self.parallel:
            return sum(lats)
        if self.early_exit and len(lats) == 3:
            return max(lats[:2]) + lats[2]
        return max(lats, default=0.0)

    def judge_latency(self, jv: Vote) -> float:
        return 0.0 if (jv.cached and self.free_cached) else jv.latency_s

    def decide(self, votes: Sequence[Vote]) -> Decision:
        return self.policy.decide(votes, self.n_workers)

    def rule(self, d: Decision) -> str:
        """What a record says of the rule (``majority: 2 of 2 agree``; ``judge only``)."""
        return JUDGE_ONLY if not self.n_workers else f"{self.policy.describe()}: {d.reason}"


@dataclass
class Escalation:
    """An item the workers did not settle: it waits for the judge's vote."""

    index: int  # position in the batch
    item: Item
    votes: list[Vote]
    decision: Decision
    rule: str


def vote_problem(vote: Vote) -> str | None:
    """Why a vote cannot be used (a distribution with NaN, negative or non-numeric values), or
    None.  Such a vote is turned into an abstention, so a broken model never decides an item
    (NaN compares false with every threshold, so it would pass any confidence check)."""
    if vote.label is None:
        return None
    for lab, p in vote.probs.items():
        why = probability_problem(lab, p)
        if why is not None:
            return why
    return None


def sane(vote: Vote) -> Vote:
    """The vote, or an abstention saying what was wrong with it (see :func:`vote_problem`)."""
    why = vote_problem(vote)
    if why is None:
        return vote
    return Vote.abstain(vote.model, f"unusable distribution: {why}", latency_s=vote.latency_s,
                        method=vote.method)


def item_problem(task: Task, item: Item) -> str | None:
    """Why an item cannot be classified (a missing, empty or non-text field), or None."""
    if not isinstance(item, Item):
        return f"not an Item: {type(item).__name__}"
    for name in task.fields:
        value = item.fields.get(name) if isinstance(item.fields, dict) else None
        if value is None:
            return f"field {name!r} is missing"
        if not isinstance(value, str):
            return f"field {name!r} is not text: {type(value).__name__} {value!r}"
        if not value.strip():
            return f"field {name!r} is empty"
    return None


def input_record(item: Item, problem: str) -> Record:
    return Record(id=None if item.id is None else str(item.id), label=None, decided_by=None,
                  error=f"id {item.id!r}: {problem}", error_kind="input", row=item.row)


def accepted_record(item: Item, votes: list[Vote], d: Decision, rules: Rules) -> Record:
    return Record(
        id=item.id,
        label=d.label,
        decided_by="workers",
        votes=votes,
        latency_s=rules.latency(votes),
        rule=rules.rule(d),
        truncated=item.truncated or any(v.truncated for v in votes),
        row=item.row,
    )


def decide_batch(
    items: Sequence[Item],
    votes: Sequence[list[Vote]],
    rules: Rules,
    ask_third: Callable[[list[int]], Sequence[Vote]] | None = None,
) -> tuple[list[Record | None], list[Escalation]]:
    """The rule on each item's votes: a record for every accepted item (``None`` at the places
    of escalated items) and the escalations, in batch order.

    Under early exit ``votes`` holds the first two workers' votes; ``ask_third(indices)``
    returns the third worker's votes for the items the first two did not settle (the rule sees
    the first two with ``n_workers=3``, as if the third had abstained).  ``votes`` lists are
    extended in place.
    """
    out: list[Record | None] = [None] * len(items)
    for vs in votes:
        vs[:] = [sane(v) for v in vs]
    if not rules.n_workers:
        none = Decision(False, None, 0.0, JUDGE_ONLY)
        return out, [Escalation(i, it, list(votes[i]), none, JUDGE_ONLY)
                     for i, it in enumerate(items)]
    decisions = [rules.decide(v) for v in votes]
    if rules.early_exit and ask_third is not None:
        again = [i for i, d in enumerate(decisions) if not d.accepted]
        if again:
            for i, v in zip(again, ask_third(again), strict=True):
                votes[i].append(sane(v))
                decisions[i] = rules.decide(votes[i])
    escalations: list[Escalation] = []
    for i, (item, d) in enumerate(zip(items, decisions, strict=True)):
        if d.accepted:
            out[i] = accepted_record(item, votes[i], d, rules)
        else:
            escalations.append(Escalation(i, item, votes[i], d, rules.rule(d)))
    return out, escalations


def settle(esc: Escalation, jv: Vote, rules: Rules) -> Record:
    """The record of an escalated item from the judge's vote: the judge's label; a ``judge``
    error when it answered but could not label the item; ``no_judge`` when it was unavailable
    (retryable: a rerun decides the item again)."""
    jv = sane(jv)
    wl = rules.latency(esc.votes)
    truncated = esc.item.truncated or jv.truncated or any(v.truncated for v in esc.votes)
    if jv.label is None and jv.retryable:
        return Record(id=esc.item.id, label=None, decided_by=None, votes=esc.votes,
                      judge_vote=jv, latency_s=wl, rule=esc.rule, truncated=truncated,
                      error=f"judge unavailable: {jv.error}", error_kind="no_judge",
                      row=esc.item.row)
    return Record(
        id=esc.item.id,
        label=jv.label,
        decided_by="judge",
        votes=esc.votes,
        judge_vote=jv,
        latency_s=wl + rules.judge_latency(jv),
        rule=esc.rule,
        truncated=truncated,
        error=None if jv.label is not None else f"judge abstained: {jv.error}",
        error_kind=None if jv.label is not None else "judge",
        row=esc.item.row,
    )


def unjudged(esc: Escalation, rules: Rules) -> Record:
    """The record of an escalated item in a cascade that has no judge (retryable)."""
    return Record(id=esc.item.id, label=None, decided_by=None, votes=esc.votes,
                  latency_s=rules.latency(esc.votes), rule=esc.rule,
                  error="escalated, but the cascade has no judge", error_kind="no_judge",
                  row=esc.item.row)
