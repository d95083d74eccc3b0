"""The demo as a library function: a cascade on a built-in sample, timed against the judge alone.

The sample (30 short reviews, 20 support-ticket pairs) was written for this project; it carries
gold labels so the demo can show accuracy next to the judge-call rate and the time.
:func:`run_demo_task` returns the numbers; ``speculabel demo`` prints them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from speculabel.records import Item, Record, Vote

SAMPLES = {"sentiment": "demo_sentiment.jsonl", "similar-ticket": "demo_tickets.jsonl"}


def load_sample(task_name: str) -> tuple[list[Item], dict[str, str]]:
    path = resources.files("speculabel") / "data" / SAMPLES[task_name]
    items: list[Item] = []
    gold: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        fields = {k: v for k, v in row.items() if k not in ("id", "gold")}
        items.append(Item(row["id"], fields))
        gold[row["id"]] = row["gold"]
    return items, gold


CERTIFIED = "demo.toml"


def certified_setup(task_name: str, say: Any) -> tuple[dict[str, Any], str] | None:
    """The fastest configuration the bench certified for this task (``data/demo.toml``), with
    its learning workers fitted again, exactly as the bench fitted them: on the gold labels of
    the same fit share (the items of ``fit.data`` outside the bench items ``fit.exclude``; needs
    ``../shared/data``; kept under ``$SPECULABEL_HOME/demo``).  None when there is none or the
    data is absent."""
    import tomllib

    from speculabel.bench.core import outside_items
    from speculabel.certify.workflow import fit_learner, learning
    from speculabel.io.datasets import DataMissing, from_spec
    from speculabel.io.paths import home_dir
    from speculabel.io.votes import item_key
    from speculabel.tasks import load_task

    raw = (resources.files("speculabel") / "data" / CERTIFIED).read_text(encoding="utf-8")
    entry = tomllib.loads(raw).get(task_name)
    if entry is None:
        return None
    models: dict[str, dict[str, Any]] = {}
    learners = [w for w in entry["workers"] if learning(w)]
    if learners:
        fit = entry["fit"]
        task = load_task(task_name)
        for spec in learners:
            folder = home_dir() / "demo" / task_name / spec.replace(":", "-")
            if not (folder / "meta.json").exists():
                try:
                    bench = {item_key(task, it) for it in from_spec(fit["exclude"]).items}
                    pool = outside_items(task, fit["data"], fit["items"], bench)
                except DataMissing as e:
                    say(f"[yellow]the certified configuration refits {spec} from the shared "
                        f"data, which is absent ({e}); showing the default workers[/]")
                    return None
                say(f"[dim]fitting {spec} on {len(pool)} gold labels of {fit['data']} "
                    "(once)[/]")
                worker = fit_learner(spec, task, [it for it, _ in pool], [g for _, g in pool],
                                     folder)
                worker.close()
            models[spec] = {"directory": str(folder), "frozen": True}
    cfg = {"task": task_name, "workers": entry["workers"], "judge": entry["judge"],
           "policy": "confident-majority", "threshold": entry["threshold"], "models": models,
           "batch_size": 1}
    return cfg, entry["certificate"]


@dataclass
class DemoRun:
    """One task's demo: the cascade's records and the judge alone on the same items."""

    task: str
    settings: dict[str, Any]
    note: str | None
    items: list[Item]
    gold: dict[str, str]
    records: list[Record]
    judge_votes: list[Vote]
    cascade_s: float
    judge_s: float
    judge_calls: int

    @property
    def accuracy(self) -> float:
        return sum(r.label == self.gold[it.id] for it, r in zip(self.items, self.records,
                                                                  strict=True)) / len(self.items)

    @property
    def judge_accuracy(self) -> float:
        return sum(v.label == self.gold[it.id] for it, v in zip(self.items, self.judge_votes,
                                                                  strict=True)) / len(self.items)

    @property
    def agreement(self) -> float:
        return sum(r.label == v.label for r, v in zip(self.records, self.judge_votes,
                                                      strict=True)) / len(self.items)

    @property
    def speedup(self) -> float:
        return self.judge_s / self.cascade_s if self.cascade_s else float("inf")


def demo_settings(task_name: str, workers: list[str] | None, judge: str, policy: str,
                  threshold: float | None, say: Callable[[str], Any]
                  ) -> tuple[dict[str, Any], str | None]:
    """The settings the demo runs for a task: the bench's certified configuration when asked
    for (``policy="certified"``) and available, else ``workers`` (or the defaults) under the
    rule asked for (``majority`` in place of ``certified``)."""
    from speculabel.cascade import default_workers

    found = None if workers or policy != "certified" else certified_setup(task_name, say)
    if found is not None:
        return found[0], found[1]
    rule = "majority" if policy == "certified" else policy
    return ({"task": task_name, "workers": workers or default_workers(task_name), "judge": judge,
             "policy": rule, "threshold": threshold, "batch_size": 1}, None)


def run_demo_task(settings: dict[str, Any], note: str | None = None,
                  say: Callable[[str], Any] = lambda m: None,
                  progress: Callable[[int, int], Any] | None = None) -> DemoRun:
    """Run the cascade of ``settings`` on its task's sample, then the judge alone on the same
    items in the same process (both warm, with empty per-text caches, as the bench measures)."""
    from speculabel.backends.capabilities import warm_up
    from speculabel.cascade import build_cascade, make_config
    from speculabel.tasks import load_task

    task_name = str(settings["task"])
    task = load_task(task_name)
    items, gold = load_sample(task_name)
    cfg = make_config(settings)
    cascade = build_cascade(cfg, task=task, progress=say)
    try:
        warm_up([*cascade.workers, *([cascade.judge] if cascade.judge else [])], task, items)
        t0 = time.perf_counter()
        records: list[Record] = []
        for rec in cascade.classify_iter(items):
            records.append(rec)
            if progress is not None:
                progress(len(records), len(items))
        cascade_s = time.perf_counter() - t0
        assert cascade.judge is not None
        t1 = time.perf_counter()
        judge_votes = cascade.judge.score(task, items)
        judge_s = time.perf_counter() - t1
    finally:
        cascade.close()
    return DemoRun(task_name, settings, note, items, gold, records, judge_votes, cascade_s,
                   judge_s, cascade.stats.judge_calls)
