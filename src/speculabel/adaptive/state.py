"""What an adaptive run keeps beside its results file, so that ``kill -9`` loses nothing.

``OUT.adaptive/``: ``state.json`` (settings, the threshold in force, every look), ``audit.jsonl``
(one line per audited item: its judge label and what the workers in force said about it,
appended and fsynced as they come) and one folder per learning worker (its labels, embeddings
and the head it votes with).  Judge labels themselves live in the vote store, so a resumed run
pays for none twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speculabel.adaptive.plan import AdaptiveSettings

FORMAT = 1


@dataclass
class AuditRow:
    """One audited item: the judge's label, and what the workers in force would have done."""

    key: str
    id: str
    position: int
    fields: dict[str, str]
    judge: str
    worker_label: str | None
    accepted: bool  # the workers in force would have decided it themselves


@dataclass
class Look:
    """One re-certification: the candidate, and whether it was certified (and adopted)."""

    look: int
    processed: int
    audit_n: int
    train_n: int
    level: float
    certified: bool
    threshold: float | None
    coverage: float
    estimate: float | None
    bound: float | None
    message: str


@dataclass
class AdaptiveState:
    """The state of one adaptive run (see the module docstring)."""

    directory: Path
    settings: AdaptiveSettings
    n_items: int
    threshold: float | None = None
    looks: list[Look] = field(default_factory=list)
    audits: dict[str, AuditRow] = field(default_factory=dict)

    @property
    def last_look(self) -> int:
        return max((lk.look for lk in self.looks), default=0)

    @property
    def certified_looks(self) -> list[Look]:
        return [lk for lk in self.looks if lk.certified]

    # ------------------------------------------------------------------ persistence
    @classmethod
    def open(cls, directory: Path, settings: AdaptiveSettings, n_items: int) -> AdaptiveState:
        """The state in ``directory`` (made empty when new); other settings are refused."""
        directory.mkdir(parents=True, exist_ok=True)
        state = cls(directory, settings, n_items)
        path = directory / "state.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("settings") != settings.to_json() or data.get("n_items") != n_items:
                raise ValueError(
                    f"{directory} belongs to an adaptive run with other settings or another "
                    f"input ({data.get('settings')}, {data.get('n_items')} items); use another "
                    "output file"
                )
            state.threshold = data.get("threshold")
            state.looks = [Look(**lk) for lk in data.get("looks", [])]
        audit = directory / "audit.jsonl"
        if audit.exists():
            raw = audit.read_bytes()
            if raw and not raw.endswith(b"\n"):  # a torn last line: that audit is redone
                with audit.open("r+b") as fh:
                    fh.truncate(raw.rfind(b"\n") + 1)
            for line in audit.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = AuditRow(**json.loads(line))
                    state.audits[row.key] = row
        return state

    def save(self) -> None:
        data = {"format": FORMAT, "settings": self.settings.to_json(), "n_items": self.n_items,
                "threshold": self.threshold, "looks": [asdict(lk) for lk in self.looks]}
        tmp = self.directory / f".state.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.directory / "state.json")

    def add_audits(self, rows: list[AuditRow]) -> None:
        fresh = [r for r in rows if r.key not in self.audits]
        if not fresh:
            return
        with (self.directory / "audit.jsonl").open("a", encoding="utf-8") as fh:
            for r in fresh:
                fh.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for r in fresh:
            self.audits[r.key] = r

    def learner_dir(self, spec: str) -> Path:
        return self.directory / spec.partition("@")[0].replace(":", "-")

    def summary(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "looks": len(self.looks),
                "certified_looks": len(self.certified_looks), "audits": len(self.audits)}
