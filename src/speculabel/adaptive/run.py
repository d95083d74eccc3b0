"""The adaptive run: the judge labels the warm-up, workers learn from it, an audit certifies.

Items come in the processing order of :mod:`speculabel.adaptive.plan`.  Per item:

* **warm-up** (the first ``warmup`` items): to the judge; half of them (by a hash) are audit
  items, the other half train the learning workers;
* after the warm-up, an **audit** item (``audit_rate`` of them, by a hash) goes to the judge
  whatever the workers say (its record says so and carries the judge's label; the workers'
  votes are kept beside it); it never trains a worker;
* any other item is decided by the workers when the confident majority reaches the threshold in
  force, else **escalated** to the judge, whose label trains the learning workers.

At each look (:func:`speculabel.adaptive.plan.look_due`) the learning workers' candidate heads,
refitted on every training label so far, are certified on the audit items
(:meth:`AdaptiveCascade.look`); they are put to work only when certified.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from speculabel.adaptive.plan import level, look_due, phase
from speculabel.adaptive.state import AdaptiveState, AuditRow, Look
from speculabel.backends.base import Backend, unwrap
from speculabel.backends.learner.base import Head, LearningWorker
from speculabel.cascade.decide import Escalation, Rules, decide_batch, settle
from speculabel.cascade.run import CascadeStats, ask
from speculabel.certify.scores import agreement_flags, policy_scores
from speculabel.certify.threshold import calibrate_threshold
from speculabel.io.votes import item_key
from speculabel.policy import ConfidentMajority, Decision
from speculabel.records import Item, Record, Vote
from speculabel.tasks import Task

RULE = "adaptive"
_NONE = Decision(False, None, 0.0, "")


class _NoThreshold(ConfidentMajority):
    """Before the first certified look: the workers decide nothing."""

    def __init__(self) -> None:
        super().__init__(1.0)

    def decide(self, votes: Sequence[Vote], n_workers: int | None = None) -> Decision:
        d = super().decide(votes, n_workers)
        return Decision(False, d.label, d.support, "no certified threshold yet")


class AdaptiveCascade:
    """Workers, a judge and the state of one adaptive run (see the module docstring)."""

    def __init__(self, task: Task, workers: Sequence[Backend], judge: Backend,
                 state: AdaptiveState, *, batch_size: int = 8) -> None:
        if not workers:
            raise ValueError("an adaptive run needs at least one worker")
        self.task = task
        self.workers = list(workers)
        self.judge = judge
        self.state = state
        self.settings = state.settings
        self.batch_size = max(1, batch_size)
        self.learners = [w for w in (unwrap(b) for b in self.workers)
                         if isinstance(w, LearningWorker)]
        for lw in self.learners:
            lw.auto_retrain = False  # heads change only when a look certifies them
            lw.check_task(task)  # bound to the task's labels before the first look
        self.stats = CascadeStats()

    # ------------------------------------------------------------------ the run
    def run(self, todo: Sequence[tuple[int, Item]], processed: int) -> Iterator[Record]:
        """Records for ``todo`` (position in the processing order, item), in batches;
        ``processed``: items of the order already done (a resumed run)."""
        t0 = time.perf_counter()
        try:
            self._catch_up(processed)
            for start in range(0, len(todo), self.batch_size):
                batch = list(todo[start : start + self.batch_size])
                for rec in self._batch(batch):
                    processed += 1
                    yield rec
                self._catch_up(processed)
        finally:
            self.stats.wall_s += time.perf_counter() - t0

    def _catch_up(self, processed: int) -> None:
        due = look_due(self.settings, processed)
        if due is not None and due > self.state.last_look and level(
                self.settings, self.state.n_items, due) > 0:
            self.look(due, processed)  # a look with no item left to decide is not planned

    def _batch(self, batch: list[tuple[int, Item]]) -> Iterator[Record]:
        """One batch through the one decide core: the rule in force (a confident majority at
        the certified threshold, or none yet) decides the run-phase items; warm-up, audit and
        escalated items are settled by the judge."""
        s, task = self.settings, self.task
        phases = [phase(s, pos, item_key(task, it)) for pos, it in batch]
        items = [it for _, it in batch]
        voting = [i for i, ph in enumerate(phases) if ph in ("audit", "run")]
        votes: list[list[Vote]] = [[] for _ in batch]
        for col in ask(task, self.workers, [items[i] for i in voting], False):
            for i, v in zip(voting, col, strict=True):
                votes[i].append(v)
        thr = self.state.threshold
        rules = Rules(ConfidentMajority(thr) if thr is not None else _NoThreshold(),
                      len(self.workers))
        decided, escalations = decide_batch([items[i] for i in voting], [votes[i] for i in voting],
                                            rules)
        decisions: dict[int, Decision] = {}
        accepted: dict[int, Record] = {}
        for k, i in enumerate(voting):
            rec = decided[k]
            if rec is not None and phases[i] == "run":
                accepted[i] = rec
                rec.rule = f"{RULE} @{thr:g}: {rec.rule.split(': ', 1)[-1]}"
            if rec is not None:
                decisions[i] = Decision(True, rec.label, 0.0, rec.rule)
        for esc in escalations:
            decisions[voting[esc.index]] = esc.decision
        for i in voting:
            if i in accepted:
                yield self._count(accepted[i])
        to_judge = [i for i in range(len(batch)) if i not in accepted]
        judged = dict(zip(to_judge, ask(task, [self.judge], [items[i] for i in to_judge],
                                        False)[0], strict=True))
        train: list[tuple[Item, str]] = []
        audits: list[AuditRow] = []
        records: list[Record] = []
        for i in to_judge:
            jv, ph, item = judged[i], phases[i], items[i]
            why = {"warmup-train": "warm-up", "warmup-audit": "warm-up audit", "audit": "audit",
                   "run": f"escalated: {decisions[i].reason if i in decisions else ''}"}[ph]
            rec = settle(Escalation(i, item, votes[i], decisions.get(i, _NONE), f"{RULE}: {why}"),
                         jv, rules)
            records.append(self._count(rec))
            if rec.label is None:
                continue  # unavailable (a rerun decides it) or unanswerable: nothing learnt
            if ph in ("warmup-audit", "audit"):
                seen = decisions.get(i)
                audits.append(AuditRow(item_key(task, item), item.id, batch[i][0],
                                       dict(item.fields), rec.label,
                                       seen.label if seen else None,
                                       bool(seen and seen.accepted)))
            else:
                train.append((item, rec.label))
        self.state.add_audits(audits)  # before their records: a kill can only redo an audit
        if train:
            for lw in self.learners:
                lw.observe([it for it, _ in train], [lab for _, lab in train])
        yield from records

    def _count(self, rec: Record) -> Record:
        self.stats.add(rec)
        return rec

    # ------------------------------------------------------------------ re-certification
    def look(self, k: int, processed: int) -> Look:
        """Refit the learning workers' heads, certify them on the audit items, adopt them only
        when certified."""
        s, task = self.settings, self.task
        rows = list(self.state.audits.values())
        heads: dict[int, Head | None] = {id(lw): lw.candidate() for lw in self.learners}
        items = [Item(r.id, r.fields) for r in rows]
        columns: list[list[Vote]] = []
        for w in self.workers:
            inner = unwrap(w)
            if isinstance(inner, LearningWorker):
                head = heads[id(inner)]
                if head is None or not items:
                    columns.append([Vote.abstain(inner.spec, "too few labels")] * len(items))
                    continue
                probs = inner.candidate_proba(head, [inner.row_of(it) for it in items])
                labels = inner.labels or task.label_names
                columns.append([Vote.from_probs(inner.spec, dict(zip(labels, map(float, p),
                                                                     strict=True)))
                                for p in probs])
            else:
                columns.append(w.score(task, items) if items else [])
        votes = [list(v) for v in zip(*columns, strict=True)] if items else []
        scores, labels_ = policy_scores(ConfidentMajority(0.0), votes, len(self.workers))
        agree = agreement_flags(labels_, [r.judge for r in rows])
        lvl = level(s, self.state.n_items, k)
        res = calibrate_threshold(scores, agree, s.target, lvl, scope=s.scope)
        train_n = max((lw.n_labels for lw in self.learners), default=0)
        lk = Look(k, processed, len(rows), train_n, lvl, res.feasible, res.threshold,
                  res.coverage, res.estimate, res.bound, res.message())
        if res.feasible and res.threshold is not None:
            for lw in self.learners:
                head = heads[id(lw)]
                if head is not None:
                    lw.install(head)
            self.state.threshold = res.threshold
        self.state.looks.append(lk)
        self.state.save()
        return lk

    def close(self) -> None:
        for b in [*self.workers, self.judge]:
            b.close()
