"""Cheap backends for the service tests, registered as a plugin (entry point group
``speculabel.backends``) in a temporary distribution, so a real ``speculabel serve`` subprocess
loads them by spec: ``kw:a``, ``kw:b`` (workers) and ``oracle:x`` (the judge).

Labels follow keywords: "good" is positive, "bad" negative, anything else neutral; ``kw:b``
says positive on "maybe" (so the workers disagree there and the judge decides); the judge says
negative on "drift" (so worker-decided "good drift" items disagree with it: the audit's case).
A sleep per call and per item stands for a model's cost (a batch is cheaper than its items one
by one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speculabel.backends.base import Backend
from speculabel.records import Item, Vote
from speculabel.tasks import Task

DIST = "speculabel_serve_fakes-0.1.dist-info"


def keyword(text: str, variant: str) -> str:
    if variant == "oracle" and "drift" in text:
        return "negative"
    if variant == "b" and "maybe" in text:
        return "positive"
    if "good" in text:
        return "positive"
    if "bad" in text:
        return "negative"
    return "neutral"


class Keyword(Backend):
    def __init__(self, spec: str, call_ms: float = 2.0, item_ms: float = 0.2) -> None:
        self.spec = spec
        self.variant = "oracle" if spec.startswith("oracle:") else spec.partition(":")[2]
        self.call_s, self.item_s = call_ms / 1000, item_ms / 1000

    def fingerprint(self) -> str:
        return f"fake:{self.spec}"

    def score(self, task: Task, items: Sequence[Item]) -> list[Vote]:
        t0 = time.perf_counter()
        time.sleep(self.call_s + self.item_s * len(items))
        dt = (time.perf_counter() - t0) / max(1, len(items))
        out = []
        for it in items:
            lab = keyword(it.fields["text"], self.variant)
            probs = {x: (0.8 if x == lab else 0.1) for x in task.label_names}
            out.append(Vote.from_probs(self.spec, probs, latency_s=dt, method="classifier"))
        return out


def make(spec: str, **options: Any) -> Keyword:
    return Keyword(spec, **options)


def install(where: Path) -> Path:
    """Write the plugin's distribution metadata into ``where`` (put it and tests/ on the path)."""
    d = where / DIST
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text("Metadata-Version: 2.1\nName: speculabel-serve-fakes\n"
                                "Version: 0.1\n")
    (d / "entry_points.txt").write_text("[speculabel.backends]\nkw = serve_fakes:make\n"
                                        "oracle = serve_fakes:make\n")
    return where
