"""A bench's manifest (``bench.json``: task, items, gold, model fingerprints) and the table of
stored votes it names, so that the analysis and the report can be redone without any model."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speculabel.bench.simulate import VoteTable
from speculabel.io.votes import VoteStore
from speculabel.records import Vote

MANIFEST = "bench.json"
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class Manifest:
    """Everything needed to redo the analysis from the store alone."""

    task: str
    task_fingerprint: str
    labels: list[str]
    dataset: dict[str, Any]
    item_ids: list[str]
    item_keys: list[str]
    gold: list[str | None] | None
    models: list[dict[str, Any]]  # spec, fingerprint, load_s, ...
    judge: str
    store: str
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    created: float = field(default_factory=time.time)
    #: workers that learn (fitted on the fit share; their votes live in learned_votes.json)
    learners: list[str] = field(default_factory=list)
    #: the fit / certify / held-out split of the certified section (item indices)
    split: dict[str, list[int]] = field(default_factory=dict)
    #: the data set the fit share came from, when not from the bench items
    fit_from: str | None = None
    fit_items: int = 0

    def save(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        path = out_dir / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {out_dir}: run the bench there first")
        data = json.loads(path.read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def specs(self) -> list[str]:
        return [m["spec"] for m in self.models]


def vote_table(store: VoteStore, manifest: Manifest) -> tuple[VoteTable, dict[str, int]]:
    """The stored votes of every model for the manifest's items; and how many were missing.

    A missing vote becomes an abstention ("not in the vote store"); stored abstentions are kept.
    """
    votes: dict[str, list[Vote]] = {}
    cpus: dict[str, list[float]] = {}
    missing: dict[str, int] = {}
    for m in manifest.models:
        spec, fp = m["spec"], m["fingerprint"]
        got = store.get_many_stored(
            fp, manifest.task_fingerprint, manifest.item_keys, include_abstentions=True,
            model_name=spec,
        )
        vs: list[Vote] = []
        cs: list[float] = []
        miss = 0
        for k in manifest.item_keys:
            s = got.get(k)
            if s is None:
                miss += 1
                vs.append(Vote.abstain(spec, "not in the vote store"))
                cs.append(0.0)
            else:
                vs.append(s.vote)
                cs.append(s.cpu_s if s.cpu_s is not None else s.vote.latency_s)
        votes[spec], cpus[spec], missing[spec] = vs, cs, miss
    return VoteTable(votes, cpus), missing

