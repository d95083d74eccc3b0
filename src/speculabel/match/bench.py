"""The match bench: labelled queues from Banking77 (same intent = same issue).

It also writes the chosen, certified settings as a cascade.toml (``out_config``) that
``speculabel match --config`` runs with the real judge.

The split was fixed before any tuning and is never changed by it:

* ``fit`` queue: 1,000 random tickets of Banking77 ``test.csv`` (seed 1): the
  ``similarity:minilm`` worker is fitted on the gold labels of its candidate pairs;
* ``tune`` queue: 1,000 *other* random tickets of ``test.csv`` (seed 2): the match certificate
  is certified on its candidate pairs (gold reference), and ``--k`` / ``--floor`` are chosen
  on it (the grid below);
* ``held-out`` queue: 1,000 random tickets of ``train.csv`` (seed 0), looked at only to report
  the chosen settings and the baselines; nothing is chosen on it;
* ``held-out-2``: 1,000 other tickets of ``train.csv`` (seed 3), added after the judge-budget
  ranking was changed (pairs already inside one group last) once ``held-out`` had been seen.
* ``held-out-3``: 1,000 other tickets of ``train.csv`` (seed 4), added when the certified
  precision was raised from the goal (0.93) to 0.95 after both held-out queues had missed the
  goal by 0.4 to 1.4 points (the certificate is about pairs drawn like the tune queue's, from
  ``test.csv``; the held-out queues come from ``train.csv``, whose intents are unevenly
  represented, and pairs of one queue share tickets, so queue-to-queue variation exceeds what
  the per-pair bound assumes).

The judge is an LLM (qwen2.5-1.5b, about 1 s a pair on 2 cores); here **gold stands in for the
judge** (a judge that is always right), so judge-decided matches are exact and the numbers are
an upper bound for a real judge (about 80 % right on Banking77 pairs, see the README).

Baselines on the held-out queue: a cosine threshold picked *with hindsight* (on the held-out
gold: the loosest threshold whose reported matches are at least the target precision) and the
judge on every candidate pair.
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speculabel.match.candidates import Pair, candidate_pairs
from speculabel.records import Item

GRID_K = (3, 5, 8)
GRID_FLOOR = (0.3,)
GRID_REJECT = (0.5,)
GRID_WORKERS = ("learner:minilm", "learner:minilm,similarity:minilm")
FIT_K, FIT_FLOOR = 8, 0.3
BUDGET = 0.10
#: seconds per judge call of qwen2.5-1.5b on a quiet 2-core VM (README, similar-ticket bench)
JUDGE_S = 0.916
TIME_GOAL_S = 600.0
TARGET = 0.93  # the goal: precision of the reported matches on a queue not tuned on
#: the precision the workers' matches are certified for: above the goal, for the variation
#: from queue to queue (see ``held-out-3`` in the module docstring)
CERTIFY_TARGET = 0.95
HELD_OUT = ("held-out", "held-out-2", "held-out-3")


@dataclass
class Queue:
    name: str
    texts: list[str]
    intents: list[str]

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in range(len(self.texts))]

    def items(self) -> list[Item]:
        return [Item(str(i), {"text": t}) for i, t in enumerate(self.texts)]


def queues(data_dir: Path, n: int = 1000) -> dict[str, Queue]:
    """The three queues of the fixed split (see the module docstring)."""
    def read(name: str) -> list[tuple[str, str]]:
        with (data_dir / name).open(newline="", encoding="utf-8") as fh:
            return [(r["text"], r["category"]) for r in csv.DictReader(fh)]

    test, train = read("test.csv"), read("train.csv")
    order = list(range(len(test)))
    random.Random(1).shuffle(order)
    fit = [test[i] for i in order[:n]]
    rest = order[n:]
    random.Random(2).shuffle(rest)
    tune = [test[i] for i in rest[:n]]
    held = random.Random(0).sample(train, n)
    seen = set(held)
    held2 = random.Random(3).sample([r for r in train if r not in seen], n)
    seen |= set(held2)
    held3 = random.Random(4).sample([r for r in train if r not in seen], n)
    return {name: Queue(name, [t for t, _ in q], [c for _, c in q])
            for name, q in (("fit", fit), ("tune", tune), ("held-out", held),
                            ("held-out-2", held2), ("held-out-3", held3))}


class Memo:
    """MiniLM with a memory: each text embedded once for the whole bench."""

    def __init__(self, path: Path | None = None) -> None:
        from speculabel.backends.learner.embed import MiniLMEmbedder

        self.inner = MiniLMEmbedder()
        self.name = MiniLMEmbedder.name
        self.cache: dict[str, np.ndarray] = {}
        self.path = path
        if path is not None and path.exists():
            with np.load(path) as z:
                self.cache = dict(zip(z["texts"].tolist(), z["vectors"], strict=True))

    def save(self) -> None:
        """Keep the vectors for the next bench run (``--embed-cache``; timed runs start cold)."""
        if self.path is not None and self.cache:
            texts = list(self.cache)
            np.savez(self.path, texts=np.array(texts), vectors=np.stack([self.cache[t] for t in texts]))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            for t, v in zip(todo, self.inner(todo), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384))


def pair_items(q: Queue, pairs: Sequence[Pair]) -> tuple[list[Item], list[str]]:
    items = [Item(f"{p.a}-{p.b}", {"text_a": q.texts[p.a], "text_b": q.texts[p.b]})
             for p in pairs]
    gold = ["similar" if q.intents[p.a] == q.intents[p.b] else "not_similar" for p in pairs]
    return items, gold


def gold_judge(queues_: Sequence[Queue]) -> Any:
    """A judge that answers with gold (the intents): the stand-in for the LLM judge."""
    from speculabel.backends.base import FunctionBackend

    intent = {t: c for q in queues_ for t, c in zip(q.texts, q.intents, strict=True)}

    def fn(task: Any, items: Sequence[Item]) -> list[dict[str, float]]:
        return [{"similar": 1.0, "not_similar": 0.0}
                if intent[it.fields["text_a"]] == intent[it.fields["text_b"]]
                else {"similar": 0.0, "not_similar": 1.0} for it in items]

    return FunctionBackend("gold-judge", fn)


def fitted_workers(q: Queue, embed: Memo, names: Sequence[str]) -> list[Any]:
    """Workers fitted on the gold labels of the fit queue's candidate pairs (``FIT_K``
    neighbours, floor ``FIT_FLOOR``: more pairs than any tuned ``k`` gives), then frozen."""
    from speculabel.backends.learner.backend import LearnerBackend
    from speculabel.backends.learner.similarity import SimilarityBackend

    items, gold = pair_items(q, candidate_pairs(embed(q.texts), None, FIT_K, FIT_FLOOR))
    rows = [(it.fields["text_a"], it.fields["text_b"]) for it in items]
    out = []
    for name in names:
        w = (LearnerBackend(embedder=embed) if name == "learner:minilm"
             else SimilarityBackend(embedder=embed))
        w.fit(rows, gold)
        w.frozen = True
        out.append(w)
    return out


def scores(q: Queue, records: Sequence[dict[str, Any]], pairs: Sequence[Pair]) -> dict[str, Any]:
    """Precision, candidate recall, tickets-with-a-duplicate that get one, ARI of the groups
    and (``ari_components``) of the connected components of the same matches, for comparison."""
    from collections import Counter

    from sklearn.metrics import adjusted_rand_score

    from speculabel.match.grouping import groups

    count = Counter(q.intents)
    has_dup = [count[c] > 1 for c in q.intents]
    n_dup = sum(has_dup)
    pos = {r["id"]: i for i, r in enumerate(records)}
    reported = [(pos[r["id"]], pos[m["id"]]) for r in records for m in r["matches"]
                if pos[r["id"]] < pos[m["id"]]]
    right = sum(q.intents[a] == q.intents[b] for a, b in reported)
    cand_hit = {a for p in pairs if q.intents[p.a] == q.intents[p.b] for a in (p.a, p.b)}
    got = [bool(r["matches"]) for r in records]
    got_right = [any(q.intents[pos[m["id"]]] == q.intents[i] for m in r["matches"])
                 for i, r in enumerate(records)]
    return {
        "matches": len(reported),
        "precision": right / len(reported) if reported else None,
        "candidate_recall": sum(1 for i in cand_hit if has_dup[i]) / n_dup if n_dup else None,
        "dup_tickets_matched": sum(g for g, d in zip(got, has_dup, strict=True) if d) / n_dup,
        "dup_tickets_matched_right": sum(g for g, d in zip(got_right, has_dup, strict=True)
                                         if d) / n_dup,
        "ari": float(adjusted_rand_score(q.intents, [r["group"] for r in records])),
        "ari_components": float(adjusted_rand_score(
            q.intents, groups([r["id"] for r in records], reported))),
    }


def run_queue(q: Queue, cascade: Any, embed: Any, k: int, floor: float,
              reject: float | None = None, budget: float | None = BUDGET) -> dict[str, Any]:
    from speculabel.match.run import MatchSettings, run_match

    t0 = time.perf_counter()
    res = run_match(q.items(), cascade, embed=embed,
                    settings=MatchSettings(k=k, floor=floor, judge_budget=budget))
    wall = time.perf_counter() - t0
    pairs = candidate_pairs(embed(q.texts), None, k, floor)
    s = res.stats
    out = {"queue": q.name, "workers": [w.spec for w in cascade.workers], "k": k,
           "floor": floor, "reject": reject, "judge_budget": budget, "tickets": s.tickets,
           "candidate_pairs": s.candidate_pairs, "judge_calls": s.judge_calls,
           "judge_share": s.judge_calls / s.candidate_pairs if s.candidate_pairs else 0.0,
           "wall_s": round(wall, 2),
           "est_s_real_judge": round(wall + JUDGE_S * s.judge_calls, 1),
           **scores(q, res.records, pairs)}
    return out


def hindsight_cosine(q: Queue, embed: Any, k: int, floor: float,
                     target: float = TARGET) -> dict[str, Any]:
    """Baseline: accept every candidate pair whose cosine reaches the loosest threshold with
    precision >= target on this queue's own gold (picked with hindsight)."""
    from speculabel.match.grouping import groups

    pairs = candidate_pairs(embed(q.texts), None, k, floor)
    best = None
    for c in np.arange(0.30, 0.951, 0.01):
        kept = [p for p in pairs if p.cosine >= c]
        if kept and sum(q.intents[p.a] == q.intents[p.b] for p in kept) / len(kept) >= target:
            best = float(c)
            break
    kept = [p for p in pairs if best is not None and p.cosine >= best]
    recs = _records(q, kept, groups(q.ids, [(p.a, p.b) for p in kept]))
    name = (f"cosine >= {best:.2f} (hindsight)" if best is not None
            else "cosine (hindsight): no threshold reaches the target")
    return {"queue": q.name, "baseline": name, "k": k,
            "floor": floor, "candidate_pairs": len(pairs), "judge_calls": 0,
            "judge_share": 0.0, **scores(q, recs, pairs)}


def judge_everything(q: Queue, embed: Any, k: int, floor: float,
                     judge_s: float = 1.0) -> dict[str, Any]:
    """Baseline: the judge (gold) on every candidate pair; its time at ``judge_s`` a pair."""
    from speculabel.match.grouping import groups

    pairs = candidate_pairs(embed(q.texts), None, k, floor)
    kept = [p for p in pairs if q.intents[p.a] == q.intents[p.b]]
    recs = _records(q, kept, groups(q.ids, [(p.a, p.b) for p in kept]))
    return {"queue": q.name, "baseline": "judge on every candidate pair (gold)", "k": k,
            "floor": floor, "candidate_pairs": len(pairs), "judge_calls": len(pairs),
            "judge_share": 1.0, "judge_time_est_s": round(judge_s * len(pairs)),
            **scores(q, recs, pairs)}


def _records(q: Queue, kept: Sequence[Pair], names: Sequence[str]) -> list[dict[str, Any]]:
    matches: list[list[dict[str, Any]]] = [[] for _ in q.texts]
    for p in kept:
        matches[p.a].append({"id": str(p.b)})
        matches[p.b].append({"id": str(p.a)})
    return [{"id": str(i), "matches": m, "group": names[i]} for i, m in enumerate(matches)]


def choose(rows: Sequence[dict[str, Any]], target: float = TARGET) -> dict[str, Any]:
    """The default: among settings with precision >= target on the tune queue and an estimated
    time with the real judge under 10 minutes, the most tickets-with-a-duplicate matched (then
    ARI); with none, the best precision."""
    ok = [r for r in rows if (r["precision"] or 0) >= target
          and r["est_s_real_judge"] <= TIME_GOAL_S]
    if ok:
        return max(ok, key=lambda r: (round(r["dup_tickets_matched"], 3), r["ari"]))
    return max(rows, key=lambda r: r["precision"] or 0)


def bench(data_dir: Path, *, n: int = 1000, grid_k: Sequence[int] = GRID_K,
          grid_floor: Sequence[float] = GRID_FLOOR, grid_reject: Sequence[float] = GRID_REJECT,
          grid_workers: Sequence[str] = GRID_WORKERS, budget: float = BUDGET,
          target: float = TARGET, certify_target: float = CERTIFY_TARGET, delta: float = 0.1,
          embed_cache: Path | None = None, out_config: Path | None = None,
          log: Any = print) -> dict[str, Any]:
    """Tune on the tune queue (the workers' matches certified at ``certify_target``; settings
    chosen by precision >= ``target`` there), then report the chosen settings and both
    baselines on the held-out queues (see the module docstring)."""
    from speculabel.match.certify import certify_matches
    from speculabel.tasks import load_task

    task = load_task("similar-ticket")
    qs = queues(data_dir, n)
    embed = Memo(embed_cache)
    judge = gold_judge(list(qs.values()))
    t0 = time.perf_counter()
    embed(qs["fit"].texts + qs["tune"].texts)
    embed.save()
    log(f"embedded the fit and tune queues in {time.perf_counter() - t0:.1f} s")

    def certified(names: str, k: int, floor: float) -> tuple[Any, float]:
        t = time.perf_counter()
        workers = fitted_workers(qs["fit"], embed, names.split(","))
        items, gold = pair_items(qs["tune"], candidate_pairs(embed(qs["tune"].texts), None, k,
                                                             floor))
        cert = certify_matches(task, workers, items, gold, target=certify_target, delta=delta)
        return cert, time.perf_counter() - t

    tuning = []
    for names in grid_workers:
        for k in grid_k:
            for floor in grid_floor:
                cert, _ = certified(names, k, floor)
                for reject in grid_reject:
                    row = run_queue(qs["tune"], cert.cascade(judge, reject), embed, k, floor,
                                    reject, budget)
                    row["threshold"] = cert.threshold
                    tuning.append(row)
                    log(f"tune {names} k={k} floor={floor} reject={reject}: precision "
                        f"{row['precision']:.3f}, matched {row['dup_tickets_matched']:.3f}, "
                        f"judge {row['judge_share']:.3f}, ARI {row['ari']:.3f} (components "
                        f"{row['ari_components']:.3f}), threshold "
                        f"{cert.threshold}")
    chosen = choose(tuning, target)
    names = ",".join(chosen["workers"])
    k, floor, reject = int(chosen["k"]), float(chosen["floor"]), float(chosen["reject"])
    cert, fit_s = certified(names, k, floor)
    rows, baselines = [], []
    for name in HELD_OUT:
        held = qs[name]
        fresh = Memo()  # the held-out queue is embedded inside the timed run
        row = run_queue(held, cert.cascade(judge, reject), fresh, k, floor, reject, budget)
        row.update({"threshold": cert.threshold, "fit_and_certify_s": round(fit_s, 2)})
        rows.append(row)
        baselines += [hindsight_cosine(held, fresh, k, floor, target),
                      judge_everything(held, fresh, k, floor)]
    if out_config is not None:
        cert.save(out_config, judge="qwen2.5-1.5b", reject=reject, judge_budget=budget)
    return {
        "split": "fit: 1,000 of test.csv (seed 1); tune: 1,000 other tickets of test.csv "
                 "(seed 2); held-out: 1,000 of train.csv (seed 0), held-out-2 and held-out-3: "
                 "1,000 other tickets of train.csv each (seeds 3 and 4), used only for the "
                 "report",
        "judge": "gold stands in for the judge (always right)",
        "target": target, "certify_target": certify_target, "delta": delta,
        "judge_budget": budget,
        "certificate": cert.to_json(),
        "tuning": tuning,
        "chosen": {"workers": names, "k": k, "floor": floor, "reject": reject},
        "held_out": rows,
        "baselines": baselines,
    }


def table(report: dict[str, Any]) -> str:
    """The held-out rows as a Markdown table."""
    cols = ("precision", "candidate_recall", "dup_tickets_matched", "dup_tickets_matched_right",
            "ari", "ari_components", "judge_share", "candidate_pairs", "judge_calls", "wall_s", "est_s_real_judge")
    head = "| what | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1) + "\n"
    rows = [*((f"match, chosen defaults, certified ({r['queue']})", r)
              for r in report["held_out"]),
            *((f"{b['baseline']} ({b['queue']})", b) for b in report["baselines"])]

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    return head + "".join(f"| {name} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |\n"
                          for name, r in rows)
