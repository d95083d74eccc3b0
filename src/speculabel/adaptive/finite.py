"""An adaptive run over a finite input: fit on a random share, rank every item, buy judge labels
until a rank cut is certified, judge the rest.

When the whole input is known before the run (a file, a list), the certificate can be about that
input itself (:mod:`speculabel.certify.finite`) rather than about a stream, and no label is spent
on items the certificate does not need:

1. **fit**: ``F`` items drawn uniformly at random (seeded) go to the judge; the learning workers
   are fitted on their labels.  These items take the judge's label in the output.
2. **rank**: the workers vote on every other item (``M = N - F`` of them); the items are put in
   order of the workers' soft vote (their mean probability of its label), highest first, ties
   broken by a keyed hash of the id
   (:mod:`speculabel.certify.rank`).  The order depends on the fit labels and nothing else.
3. **certify**: judge labels are bought for items drawn uniformly at random without replacement
   from the ranked items, in small batches, until a cut is certified or none can be
   (:func:`speculabel.certify.sequential.sequential_certify`, rule ``reuse``).  Bought items
   take the judge's label in the output.
4. **finish**: ranked items above the cut that were not bought are decided by the workers; every
   other item by the judge.

Guarantee (scope ``dataset``).  With probability at least ``1 - delta`` over the draw of the
certification sample, given the fit share, the output's agreement with the judge over the
input's ``N`` items is at least ``T``.  Why: the output disagrees with the judge only on
worker-decided items, all among the kept ranked items; the test of
:mod:`speculabel.certify.finite` on the ``M`` ranked items allows ``B = floor((1 - T) N)``
disagreements (less one for each fit item the judge could not label), which it does by testing
at the adjusted target ``1 - B / M``.  Conditionally on the fit share the order is fixed and the
sample is uniform, so the test is exact.  Items the judge cannot answer count as disagreements.

Resuming: ``OUT.adaptive/finite.json`` keeps the fit ids, every judge vote bought so far and, once
issued, the certificate; a rerun replays the same draws from it, paying for no label twice, and
never re-certifies once a certificate is stored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.backends.base import Backend, unwrap
from speculabel.backends.learner.base import LearningWorker
from speculabel.cascade.config import AdaptiveSettings
from speculabel.cascade.decide import (
    Escalation,
    Rules,
    decide_batch,
    input_record,
    item_problem,
    settle,
)
from speculabel.cascade.run import CascadeStats, ask
from speculabel.certify.finite import CutCertificate
from speculabel.certify.rank import rank_order
from speculabel.certify.scores import policy_scores
from speculabel.certify.sequential import sequential_certify
from speculabel.policy import Decision, WeightedVote
from speculabel.records import Item, Record, Vote
from speculabel.tasks import Task

FORMAT = 1
RULE = "adaptive"
_NONE = Decision(False, None, 0.0, "")
# the order's score: the workers' mean probability of their soft vote's label (on the
# development inputs it ranks better than a confident majority, which leaves every item the
# workers split on unranked)
SOFT_VOTE = WeightedVote({}, 0.0)
Note = Callable[[str], Any]


def fit_size(n_items: int, settings: AdaptiveSettings, learns: bool) -> int:
    """Judge labels spent on fitting the learning workers (0 when none learns): ``settings.fit``,
    else 10 % of the input, at least 50 and at most 300 (chosen on the development inputs of
    ``make bench-adaptive``), never more than half the input."""
    if not learns:
        return 0
    want = settings.fit if settings.fit is not None else min(300, max(50, round(0.1 * n_items)))
    return max(0, min(want, n_items // 2))


def tie_key(settings: AdaptiveSettings) -> str:
    """The key of the rank order's tie-break (a function of the seed: a rerun orders alike)."""
    return f"speculabel-adaptive-{settings.seed}"


@dataclass
class FiniteState:
    """What a finite adaptive run keeps beside its output (see the module docstring)."""

    path: Path | None
    n_items: int
    settings: dict[str, Any] = field(default_factory=dict)
    fit_ids: list[str] = field(default_factory=list)
    votes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> the judge's vote
    certificate: dict[str, Any] | None = None
    kept_ids: list[str] | None = None  # the ranked items above the certified cut

    @classmethod
    def open(cls, path: Path | None, n_items: int, settings: AdaptiveSettings) -> FiniteState:
        """The stored state at ``path`` (a new one when there is none); refused when it was
        made for another input size or other settings."""
        mine = {k: v for k, v in settings.to_json().items()
                if k in ("target", "delta", "seed", "fit", "method")}
        if path is None or not path.exists():
            return cls(path, n_items, mine)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("n_items") != n_items:
            raise ValueError(f"{path} belongs to another run (other input or version); delete "
                             "it and the results file to start again")
        if data.get("settings") != mine:
            raise ValueError(f"{path} was made with other settings ({data.get('settings')}); "
                             "rerun with those, or delete it and the results file")
        return cls(path, n_items, mine, data["fit_ids"], data["votes"],
                   data.get("certificate"), data.get("kept_ids"))

    def judge_vote(self, item_id: str) -> Vote | None:
        d = self.votes.get(item_id)
        return Vote(**d) if d is not None else None

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = {"format": FORMAT, "n_items": self.n_items, "settings": self.settings,
                "fit_ids": self.fit_ids,
                "votes": self.votes, "certificate": self.certificate, "kept_ids": self.kept_ids}
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)


class FiniteRun:
    """Workers, a judge, the settings and the state of one finite adaptive run."""

    def __init__(self, task: Task, workers: Sequence[Backend], judge: Backend,
                 settings: AdaptiveSettings, items: Sequence[Item], state: FiniteState, *,
                 batch_size: int = 8, note: Note = lambda m: None) -> None:
        if not workers:
            raise ValueError("an adaptive run needs at least one worker")
        if settings.scope != "dataset":
            raise ValueError("an adaptive run over a file certifies scope dataset; for scope "
                             "workers use --adaptive-method stream")
        self.task, self.workers, self.judge = task, list(workers), judge
        self.settings, self.state = settings, state
        # an item that is not a valid input gets an input record and takes no part
        self.bad = [(it, p) for it, p in ((it, item_problem(task, it)) for it in items) if p]
        bad_ids = {id(it) for it, _ in self.bad}
        self.items = [it for it in items if id(it) not in bad_ids]
        self.batch_size, self.note = max(1, batch_size), note
        self.learners = [w for w in (unwrap(b) for b in self.workers)
                         if isinstance(w, LearningWorker) and not w.frozen]
        self.stats = CascadeStats()
        self.result: CutCertificate | None = None
        self.rule, self.rule_options = "reuse", dict[str, Any]()  # the bench tries others

    # ------------------------------------------------------------------ judge labels
    def _judge(self, items: Sequence[Item]) -> list[Vote]:
        """The judge's votes on these items: stored ones reused, the rest asked in batches and
        stored before they are used (a kill loses none)."""
        out: dict[str, Vote] = {}
        todo = [it for it in items if not self._answered(str(it.id))]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            for it, v in zip(chunk, ask(self.task, [self.judge], chunk, False)[0], strict=True):
                self.state.votes[str(it.id)] = asdict(v)
                out[str(it.id)] = v
            self.state.save()
        return [out.get(str(it.id)) or self.state.judge_vote(str(it.id))  # type: ignore[misc]
                for it in items]

    def _answered(self, item_id: str) -> bool:
        """Is a judge vote stored for this item (an unavailable judge's is asked again)?"""
        v = self.state.votes.get(item_id)
        return v is not None and not (v.get("label") is None and v.get("retryable"))

    def _settle(self, item: Item, votes: list[Vote], why: str, rules: Rules) -> Record:
        self._judge([item])
        jv = self.state.judge_vote(str(item.id))
        assert jv is not None
        return settle(Escalation(0, item, votes, _NONE, f"{RULE}: {why}"), jv, rules)

    # ------------------------------------------------------------------ the run
    def run(self, done: set[str] | frozenset[str] = frozenset()) -> Iterator[Record]:
        """Every item's record (those whose id is in ``done`` are decided but not yielded)."""
        rules = Rules(SOFT_VOTE, len(self.workers))
        for it, problem in self.bad:
            if str(it.id) not in done:
                yield self._count(input_record(it, problem))
        by_id = {str(it.id): it for it in self.items}
        n = len(self.items)
        # 1. fit
        if not self.state.fit_ids and not self.state.votes:
            perm = np.random.default_rng(self.settings.seed).permutation(n)
            f = fit_size(n, self.settings, bool(self.learners))
            self.state.fit_ids = [str(self.items[int(i)].id) for i in perm[:f]]
            self.state.save()
        fit_items = [by_id[i] for i in self.state.fit_ids]
        if fit_items:
            self.note(f"fit: the judge labels {len(fit_items)} random items")
        self._judge(fit_items)
        for it in fit_items:
            if it.id not in done:
                yield self._count(self._settle(it, [], "fit sample", rules))
        labelled = [(it, self.state.votes[str(it.id)]["label"]) for it in fit_items]
        labelled = [(it, lab) for it, lab in labelled if lab is not None]
        for lw in self.learners:
            if len({lab for _, lab in labelled}) < 2:
                raise ValueError(f"{lw.spec}: the judge's labels on the {len(fit_items)} fit "
                                 "items have fewer than two classes; use a larger --fit")
            lw.fit([lw.row_of(it) for it, _ in labelled], [lab for _, lab in labelled])
        # 2. rank
        fit_set = set(self.state.fit_ids)
        ranked = [it for it in self.items if str(it.id) not in fit_set]
        if not ranked:
            return
        self.note(f"rank: the workers vote on {len(ranked)} items")
        votes = self._worker_votes(ranked)
        scores, labels = policy_scores(SOFT_VOTE, votes, len(self.workers))
        # an item the rule does not accept even at threshold 0 can never be the workers'
        labels = [lab if np.isfinite(sc) else None for sc, lab in zip(scores, labels, strict=True)]
        order = rank_order(scores, [str(it.id) for it in ranked], tie_key(self.settings))
        # 3. certify
        if self.state.kept_ids is None:
            self._certify(ranked, labels, order, len(labelled))
        kept = set(self.state.kept_ids or [])
        # 4. finish, in input order
        rest: list[tuple[Item, list[Vote]]] = []
        for it, vs, lab in zip(ranked, votes, labels, strict=True):
            iid = str(it.id)
            if iid in done:
                continue
            if iid in self.state.votes:
                yield self._count(self._settle(it, vs, "certification sample", rules))
            elif iid in kept and lab is not None:
                recs, _ = decide_batch([it], [vs], rules)
                rec = recs[0]
                assert rec is not None
                rec.rule = f"{RULE}: rank cut: {rec.rule.split(': ', 1)[-1]}"
                yield self._count(rec)
            else:
                rest.append((it, vs))
        if rest:
            self.note(f"judge: {len(rest)} items below the cut")
        for start in range(0, len(rest), self.batch_size):
            chunk = rest[start:start + self.batch_size]
            self._judge([it for it, _ in chunk])
            for it, vs in chunk:
                yield self._count(self._settle(it, vs, "below the cut", rules))

    def _worker_votes(self, items: Sequence[Item]) -> list[list[Vote]]:
        """Every worker's vote on every item, asked in large batches (cheap workers)."""
        votes: list[list[Vote]] = [[] for _ in items]
        step = max(self.batch_size, 256)
        for start in range(0, len(items), step):
            chunk = list(items[start:start + step])
            for col in ask(self.task, self.workers, chunk, False):
                for k, v in enumerate(col):
                    votes[start + k].append(v)
        return votes

    def _certify(self, ranked: Sequence[Item], labels: Sequence[str | None], order: np.ndarray,
                 fit_unlabelled: int) -> None:
        s, n = self.settings, len(self.items)
        m = len(ranked)
        allowed = math.floor((1.0 - s.target) * n + 1e-9) - (len(self.state.fit_ids)
                                                              - fit_unlabelled)
        ids = [str(ranked[int(i)].id) for i in order]
        worker = [labels[int(i)] for i in order]
        if allowed < 0:
            kept_n = 0
            cert = None
        elif allowed >= m:  # every ranked item may disagree: nothing to buy
            kept_n = sum(lab is not None for lab in worker)
            cert = None
        else:
            by_id = {str(it.id): it for it in ranked}

            def buy(batch_ids: list[str]) -> list[str | None]:
                got = self._judge([by_id[i] for i in batch_ids])
                return [v.label for v in got]

            adjusted = 1.0 - (allowed + 0.5) / m  # floor((1 - adjusted) * m) == allowed
            res = sequential_certify(ids, worker, buy, adjusted, s.delta, rule=self.rule,
                                     seed=s.seed + 1, **self.rule_options)
            self.result = res.certificate
            kept_n = res.certificate.cut
            cert = res.certificate.to_json()
        self.state.certificate = {"target": s.target, "delta": s.delta, "n_items": n,
                                  "order": "soft vote, ties by BLAKE2b(id, tie_key)",
                                  "tie_key": tie_key(s),
                                  "fit": len(self.state.fit_ids), "ranked": m,
                                  "allowed_disagreements": max(0, allowed), "kept": kept_n,
                                  "labels_bought": sum(i in self.state.votes for i in ids),
                                  "test": cert}
        self.state.kept_ids = [i for i, lab in zip(ids[:kept_n], worker[:kept_n], strict=True)
                               if lab is not None]
        self.state.save()

    def _count(self, rec: Record) -> Record:
        self.stats.add(rec)
        return rec

    def close(self) -> None:
        for b in [*self.workers, self.judge]:
            b.close()


def statement(state: FiniteState) -> str:
    """The certified statement of a finite run, in words."""
    c = state.certificate
    if c is None:
        return "not certified yet: the run stopped before its certificate"
    kept = c["kept"]
    if not kept:
        return (f"no cut was certified (labels bought: {c['labels_bought']}): every item went "
                "to the judge, so every label is the judge's")
    return (f"whole-data-set agreement with the judge over these {c['n_items']} items >= "
            f"{c['target']:g} with probability >= {1 - c['delta']:g} over the draw of the "
            f"{c['labels_bought']} certification labels (exact hypergeometric test; the workers "
            f"decide the {kept} most confident of {c['ranked']} ranked items, less those "
            f"labelled)")


@dataclass
class CertifiedLabels:
    """What :func:`classify_certified` returns: one record per item, in input order, and the
    certificate the run ended with."""

    records: list[Record]
    statement: str
    certificate: dict[str, Any] | None
    stats: CascadeStats

    @property
    def labels(self) -> list[str | None]:
        return [r.label for r in self.records]


def classify_certified(task: Task | str, workers: Sequence[Backend | str], judge: Backend | str,
                       items: Iterable[Any], *, target: float = 0.85, delta: float = 0.1,
                       fit: int | None = None, seed: int = 0, batch_size: int = 8,
                       state: str | Path | None = None) -> CertifiedLabels:
    """Label a finite list of items (texts, dicts, pairs or :class:`Item`) with a certified
    whole-data agreement with the judge: the module docstring says how, and what exactly is
    certified.  Records come back in input order.  ``state``: a JSON file that makes the run
    resumable (the judge's answers bought so far, the certificate).

        out = classify_certified("sentiment", ["vader", "learner:minilm"], "qwen2.5-1.5b",
                                 df["text"], target=0.85)
        df["label"] = out.labels
    """
    from speculabel.backends.registry import load_backend
    from speculabel.cascade.surface import as_items
    from speculabel.errors import SpeculabelError
    from speculabel.tasks import load_task

    the_task = load_task(task) if isinstance(task, str) else task
    settings = AdaptiveSettings(target=target, delta=delta, seed=seed, fit=fit)
    try:
        settings.check()
    except ValueError as e:
        raise SpeculabelError(str(e)) from e
    its = list(as_items(the_task, items))
    ids = [str(it.id) for it in its]
    if len(set(ids)) != len(ids) or any(it.id is None for it in its):
        raise SpeculabelError("classify_certified needs a unique id on every item")
    models = [load_backend(w) if isinstance(w, str) else w for w in workers]
    judge_b = load_backend(judge) if isinstance(judge, str) else judge
    st = FiniteState.open(Path(state) if state is not None else None, len(its), settings)
    run = FiniteRun(the_task, models, judge_b, settings, its, st, batch_size=batch_size)
    try:
        got = {str(r.id): r for r in run.run()}
    finally:
        run.close()
    return CertifiedLabels([got[i] for i in ids], statement(st), st.certificate, run.stats)
