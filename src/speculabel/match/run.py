"""The match pipeline: embed each ticket once, find candidate pairs, let the cascade decide them,
group the accepted matches.

Stages (each reports progress through ``progress(stage, done, total)``):

1. ``embed``: every queue and past ticket embedded once with MiniLM; the cascade's learning
   workers (``similarity:minilm``, ``learner:minilm``) are handed the same vectors, so no text
   is embedded twice;
2. ``candidates``: each ticket's ``k`` nearest neighbours with cosine >= ``floor``
   (:mod:`speculabel.match.candidates`);
3. ``pairs``: the cascade (:meth:`speculabel.cascade.Cascade.classify_iter`) decides every
   candidate pair not decided yet, the one place where pairs are decided; each decision is
   journalled as it comes (:class:`speculabel.match.output.MatchOutput`);
4. ``groups``: the pairs labelled ``similar`` grouped (cohesive groups by default, pairs
   decided not similar counting against a merge: :mod:`speculabel.match.grouping`); one record
   per queue ticket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from speculabel.io.tables import RowError
from speculabel.match.budget import budgeted
from speculabel.match.grouping import DEFAULT_GROUPING, GROUPINGS, grouped
from speculabel.match.output import RETRYABLE, MatchOutput
from speculabel.records import Item, Record

if TYPE_CHECKING:  # numpy and the search load when a run starts, not with ``import speculabel``
    import numpy as np

    from speculabel.match.candidates import Pair

Progress = Callable[[str, int, int], None]
Decide = Callable[..., Iterable[Record]]  # (items) -> records; (items, done) with wants_all
EmbedFn = Callable[[Sequence[str]], "np.ndarray"]

#: chosen by the bench (``scripts/match_bench.py``) on Banking77 queues from test.csv
DEFAULT_K = 8
DEFAULT_FLOOR = 0.3
MATCH_LABEL = "similar"
OVER_BUDGET = "over_budget"


@dataclass(frozen=True)
class MatchSettings:
    k: int = DEFAULT_K
    floor: float = DEFAULT_FLOOR
    label: str = MATCH_LABEL
    engine: str = "auto"  # nearest-neighbour search: auto | exact | usearch
    #: the judge's share of the candidate pairs at most (None: every pair the workers leave)
    judge_budget: float | None = None
    #: how matches become groups: cohesive | components (:mod:`speculabel.match.grouping`)
    grouping: str = DEFAULT_GROUPING

    def check(self) -> None:
        if self.judge_budget is not None and not 0.0 <= self.judge_budget <= 1.0:
            raise ValueError(f"--judge-budget is a share of the candidate pairs, between 0 and "
                             f"1; got {self.judge_budget:g}")
        if self.k < 1:
            raise ValueError(f"--k must be at least 1, got {self.k}")
        if not -1.0 <= self.floor <= 1.0:
            raise ValueError(f"--floor is a cosine, between -1 and 1; got {self.floor:g}")
        if self.engine not in ("auto", "exact", "usearch"):
            raise ValueError(f"search engine must be auto, exact or usearch, got {self.engine!r}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"--grouping must be one of {', '.join(GROUPINGS)}, got "
                             f"{self.grouping!r}")

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "floor": self.floor, "label": self.label,
                "search": self.engine, "judge_budget": self.judge_budget,
                "grouping": self.grouping}


@dataclass
class MatchStats:
    """What the run did: the numbers its statement is made of."""

    tickets: int = 0
    past: int = 0
    candidate_pairs: int = 0
    decided_by_workers: int = 0
    judge_calls: int = 0
    pending: int = 0
    over_budget: int = 0
    errors: int = 0
    matches: int = 0
    matches_by_workers: int = 0
    matches_by_judge: int = 0
    tickets_with_match: int = 0
    groups: int = 0
    resumed_pairs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in self.__dict__.items() if k != "seconds"} | {
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


@dataclass
class MatchResult:
    """One record per queue ticket (input order), the decided pairs, and the run's numbers."""

    records: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    stats: MatchStats
    statement: list[str] = field(default_factory=list)


def embed_texts(texts: Sequence[str], embed: EmbedFn, progress: Progress | None,
                chunk: int = 256) -> np.ndarray:
    import numpy as np

    parts = []
    for start in range(0, len(texts), chunk):
        parts.append(np.asarray(embed(texts[start:start + chunk]), dtype=np.float32))
        if progress:
            progress("embed", min(start + chunk, len(texts)), len(texts))
    if not parts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.concatenate(parts)


def share_embeddings(cascade: Any, texts: Sequence[str], vectors: np.ndarray) -> int:
    """Hand the vectors to the cascade's MiniLM learning workers (their embedding cache), so
    they never embed these texts again; how many workers took them."""
    from speculabel.backends.base import unwrap
    from speculabel.backends.learner.base import LearningWorker
    from speculabel.backends.learner.embed import MiniLMEmbedder, text_key

    n = 0
    for w in cascade.workers:
        inner = unwrap(w)
        if isinstance(inner, LearningWorker) and inner.embedder_name == MiniLMEmbedder.name:
            cache = inner._cache
            for t, v in zip(texts, vectors, strict=True):
                cache.setdefault(text_key(t), v)
            n += 1
    return n


def cascade_settings(cascade: Any) -> dict[str, Any]:
    """What of a cascade decides the pairs: its workers, judge, rule and threshold."""
    policy = cascade.policy
    return {"task": cascade.task.name, "workers": [w.spec for w in cascade.workers],
            "judge": cascade.judge.spec if cascade.judge is not None else None,
            "policy": type(policy).__name__, "threshold": getattr(policy, "threshold", None)}


def content_key(entries: Sequence[Any]) -> str:
    """A fingerprint of tickets' ids and texts (the input of a run from Python)."""
    import hashlib
    import json

    rows = [[e.id, e.fields.get("text")] if isinstance(e, Item) else [e.id, e.row] for e in entries]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]


def pair_key(p: Pair, ids: Sequence[str], past_ids: Sequence[str]) -> str:
    return f"{ids[p.a]}\x1f{'past:' if p.past else ''}{(past_ids if p.past else ids)[p.b]}"


def pair_entry(key: str, a: str, b: str, p: Pair, rec: Record | None,
               label: str) -> dict[str, Any]:
    """A decided pair as its journal line (``rec`` None: left unasked, over the judge budget)."""
    if rec is None:
        return {"key": key, "a": a, "b": b, "past": p.past, "cosine": p.cosine, "label": None,
                "p": None, "decided_by": None, "error": "over the judge budget: not asked",
                "error_kind": OVER_BUDGET}
    dist = rec.distribution()
    return {"key": key, "a": a, "b": b, "past": p.past, "cosine": p.cosine,
            "label": rec.label, "p": round(float(dist.get(label, 0.0)), 4) if dist else None,
            "decided_by": rec.decided_by, "error": rec.error, "error_kind": rec.error_kind}


def run_match(
    entries: Sequence[Item | RowError],
    cascade: Any,
    *,
    past: Sequence[Item] = (),
    settings: MatchSettings | None = None,
    embed: EmbedFn | None = None,
    output: MatchOutput | None = None,
    progress: Progress | None = None,
    decide: Decide | None = None,
) -> MatchResult:
    """Match a queue (items with one ``text`` field, unique ids) against itself and ``past``;
    a bad row of the queue (:class:`RowError`) gets a record with its ``error`` at its place.

    ``decide``: decides the candidate pairs instead of ``cascade.classify_iter`` (the Ray
    engine: records in any order, matched by id; a pair it returns no record for is pending);
    one with ``wants_all`` gets every candidate pair and the keys decided before, and yields
    records for the others only (an adaptive run, :mod:`speculabel.match.adaptive`);
    ``cascade`` may then be None (the tickets are embedded with MiniLM)."""
    s = settings or MatchSettings()
    s.check()
    queue = [e for e in entries if isinstance(e, Item)]
    stats = MatchStats(tickets=len(queue), past=len(past))
    ids = [it.id for it in queue]
    past_ids = [it.id for it in past]
    texts = [_text(it) for it in queue]
    past_texts = [_text(it) for it in past]
    t0 = time.perf_counter()
    if embed is None:
        embed = _embedder(cascade)
    vecs = embed_texts([*texts, *past_texts], embed, progress)
    if cascade is not None:
        share_embeddings(cascade, [*texts, *past_texts], vecs)
    stats.seconds["embed"] = time.perf_counter() - t0

    from speculabel.match.candidates import candidate_pairs

    t0 = time.perf_counter()
    q, pv = vecs[: len(texts)], vecs[len(texts):]
    cands = candidate_pairs(q, pv if len(past) else None, s.k, s.floor, engine=s.engine)
    stats.candidate_pairs = len(cands)
    stats.seconds["candidates"] = time.perf_counter() - t0
    if progress:
        progress("candidates", len(cands), len(cands))

    t0 = time.perf_counter()
    decided: dict[str, dict[str, Any]] = dict(output.pairs) if output is not None else {}
    keys = [pair_key(p, ids, past_ids) for p in cands]
    todo = [i for i, k in enumerate(keys) if k not in decided]
    stats.resumed_pairs = len(cands) - len(todo)
    def pair_item(i: int) -> Item:
        return Item(keys[i], {"text_a": texts[cands[i].a],
                              "text_b": (past_texts if cands[i].past else texts)[cands[i].b]})

    items = [pair_item(i) for i in todo]
    done = [stats.resumed_pairs]

    def keep(i: int, rec: Record | None) -> None:
        p = cands[i]
        entry = pair_entry(keys[i], ids[p.a], (past_ids if p.past else ids)[p.b], p, rec, s.label)
        if output is not None:
            output.write_pair(entry)
        decided[keys[i]] = entry
        done[0] += 1
        if progress:
            progress("pairs", done[0], len(cands))

    if progress:
        progress("pairs", done[0], len(cands))
    if decide is not None:
        if s.judge_budget is not None:
            raise ValueError("a judge budget needs the local engine (pairs are re-ranked after "
                             "each judge answer)")
        at = {keys[i]: i for i in todo}
        if getattr(decide, "wants_all", False):  # every pair, those decided before skipped
            stream = decide([pair_item(i) for i in range(len(cands))], set(decided))
        else:
            stream = decide(items)
        for rec in stream:
            keep(at.pop(str(rec.id)), rec)
        for key, i in list(at.items()):  # the judge was out of reach: decided on a rerun
            keep(i, Record(id=key, label=None, decided_by=None, error="judge unavailable",
                           error_kind="no_judge"))
    elif s.judge_budget is None:
        for rec in cascade.classify_iter(items):
            keep(todo[rec.position], rec)
    else:
        budgeted(cascade, todo, items, cands, keys, decided, keep,
                 int(s.judge_budget * len(cands)), s.label)
    stats.seconds["pairs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pairs = [decided[k] for k in keys if k in decided]
    good = iter(_group(ids, past_ids, cands, keys, decided, s, stats))
    records = [next(good) if isinstance(e, Item) else bad_record(e) for e in entries]
    if output is not None and not stats.pending:  # pending pairs: the groups are not final
        output.write_tickets(records)
    stats.seconds["groups"] = time.perf_counter() - t0
    if progress:
        progress("groups", len(records), len(records))
    return MatchResult(records, pairs, stats)


def _group(ids: Sequence[str], past_ids: Sequence[str], cands: Sequence[Pair],
           keys: Sequence[str], decided: dict[str, dict[str, Any]], s: MatchSettings,
           stats: MatchStats) -> list[dict[str, Any]]:
    """The ticket records: matches from the decided pairs, groups by ``s.grouping`` (a match
    weighs its ``p``, a non-match ``1 - p``; without a ``p``, fully)."""
    n = len(ids)
    matches: list[list[dict[str, Any]]] = [[] for _ in ids]
    edges, non_edges = [], []
    for p, k in zip(cands, keys, strict=True):
        e = decided.get(k)
        if e is None:
            continue
        if e.get("error_kind") in RETRYABLE:
            stats.pending += 1
            continue
        if e.get("error_kind") == OVER_BUDGET:
            stats.over_budget += 1
            continue
        if e.get("error"):
            stats.errors += 1
            continue
        if e["decided_by"] == "workers":
            stats.decided_by_workers += 1
        elif e["decided_by"] == "judge":
            stats.judge_calls += 1
        pp = None if e["p"] is None else float(e["p"])
        b = n + p.b if p.past else p.b
        if e["label"] != s.label:
            non_edges.append((p.a, b, 1.0 if pp is None else 1.0 - pp))
            continue
        stats.matches += 1
        stats.matches_by_workers += e["decided_by"] == "workers"
        stats.matches_by_judge += e["decided_by"] == "judge"
        edges.append((p.a, b, 1.0 if pp is None else pp))
        m = {"p": e["p"], "decided_by": e["decided_by"], "cosine": p.cosine}
        if p.past:
            matches[p.a].append({"id": past_ids[p.b], "past": True, **m})
        else:
            matches[p.a].append({"id": ids[p.b], **m})
            matches[p.b].append({"id": ids[p.a], **m})
    names = grouped([*ids, *(f"past:{i}" for i in past_ids)], edges, s.grouping, non_edges)
    out = []
    for i, tid in enumerate(ids):
        ms = sorted(matches[i], key=lambda m: (-(m["p"] or 0.0), -m["cosine"], str(m["id"])))
        out.append({"id": tid, "matches": ms, "group": names[i]})
    stats.tickets_with_match = sum(1 for r in out if r["matches"])
    stats.groups = len(set(names[:n]))
    return out


def bad_record(bad: RowError) -> dict[str, Any]:
    """A row that could not be matched: no matches, no group, the reason."""
    return {"id": bad.id, "row": bad.row, "matches": [], "group": None, "error": bad.error}


def _text(item: Item) -> str:
    return str(next(iter(item.fields.values()), ""))


def _embedder(cascade: Any) -> EmbedFn:
    """A learning worker's own (caching) embedder when the cascade has one, else MiniLM."""
    from speculabel.backends.base import unwrap
    from speculabel.backends.learner.base import LearningWorker
    from speculabel.backends.learner.embed import MiniLMEmbedder

    for w in cascade.workers if cascade is not None else []:
        inner = unwrap(w)
        if isinstance(inner, LearningWorker) and inner.embedder_name == MiniLMEmbedder.name:
            return inner.embed
    return MiniLMEmbedder()
