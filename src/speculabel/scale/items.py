"""Items held in memory through the Ray pipeline: what a caller that builds its own items (the
pair stage of ``speculabel match``) hands to the cluster instead of a local cascade."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from speculabel.cascade.config import CascadeConfig
from speculabel.policy import Policy
from speculabel.records import Item, Record
from speculabel.scale.settings import RaySettings
from speculabel.tasks import Task


def classify_items(items: Sequence[Item], cfg: CascadeConfig, task: Task, *,
                   settings: RaySettings | None = None, votes: str | None = None,
                   run: str | None = None, policy: Policy | None = None) -> Iterator[Record]:
    """The record of each item as the cluster finishes it (any order, matched by id); an item
    the judge could not be reached for gets no record (the caller decides it again).  Ray must
    be initialised (:func:`speculabel.scale.ray_engine.ensure_ray`); ids must be unique."""
    import ray

    from speculabel.scale.ray_engine import classify_dataset
    from speculabel.scale.shards import table_records

    if not items:
        return
    rows: list[dict[str, Any]] = [{"id": str(it.id), **{f: it.fields.get(f) for f in task.fields}}
                                  for it in items]
    ds = ray.data.from_items(rows)
    out = classify_dataset(ds, cfg, id_column="id", settings=settings, votes=votes, task=task,
                           run=run, policy=policy)
    for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
        for rec in table_records(batch):
            yield Record.from_json(rec)
