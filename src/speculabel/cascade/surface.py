"""The estimator-like surface of a cascade: ``predict``, ``predict_proba``, ``classify_frame``.

What a data scientist writes first, aligned with its input like scikit-learn's ``predict(X)``:
the i-th answer belongs to the i-th input, whatever the ids, duplicates or failures.  Inputs are
plain texts (``"..."``), pairs (``("a", "b")`` for a two-field task), field dicts or
:class:`~speculabel.records.Item` objects; a pandas Series works as a sequence of texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from speculabel.errors import SpeculabelError
from speculabel.records import Item, Record
from speculabel.tasks import Task

if TYPE_CHECKING:
    import numpy as np


def as_items(task: Task, inputs: Iterable[Any]) -> Iterator[Item]:
    """Each input as an :class:`Item` whose id is its position (``"0"``, ``"1"`` ...).

    A value that is not text (None, NaN, a number) is passed on as it is: the cascade gives it
    an ``input`` error record at its place instead of failing the whole call.
    """
    fields = task.fields
    for pos, x in enumerate(inputs):
        if isinstance(x, Item):
            yield x
        elif isinstance(x, dict):
            yield Item(str(pos), dict(x))
        elif isinstance(x, tuple | list) and len(fields) > 1:
            if len(x) != len(fields):
                yield Item(str(pos), {})  # missing fields: an input error record
            else:
                yield Item(str(pos), dict(zip(fields, x, strict=True)))
        else:
            if len(fields) > 1:
                raise SpeculabelError(
                    f"input {pos}: task {task.name!r} takes pairs ({', '.join(fields)}): give "
                    f"2-tuples, got {type(x).__name__}")
            yield Item(str(pos), {fields[0]: x})


class Surface:
    """Mixed into :class:`speculabel.cascade.Cascade`; needs ``task`` and ``classify``."""

    task: Task

    def classify(self, items: Iterable[Item]) -> list[Record]:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def classes_(self) -> list[str]:
        """The task's labels, in the column order of :meth:`predict_proba`."""
        return list(self.task.label_names)

    def predict(self, inputs: Iterable[Any]) -> list[str | None]:
        """One label per input, in input order (None where the item failed: see
        :meth:`classify` for the error)."""
        return [r.label for r in self.classify(as_items(self.task, inputs))]

    def predict_proba(self, inputs: Iterable[Any]) -> np.ndarray:
        """One row per input: the decider's distribution over :attr:`classes_` (the judge's
        when it decided, the workers' mean when they did); NaN where the item failed."""
        return probabilities(self.classify(as_items(self.task, inputs)), self.classes_)

    def classify_frame(self, frame: Any, text: str = "text", text_b: str | None = None,
                       id: str | None = None) -> Any:
        """A copy of a pandas DataFrame, same index and columns, with ``label``,
        ``decided_by``, ``confidence`` and ``error`` added (``text_b``: the second text of a
        pair task; ``id``: a column of ids for the records, default the index)."""
        cols = [text] + ([text_b] if text_b else [])
        if len(cols) != len(self.task.fields):
            raise SpeculabelError(
                f"task {self.task.name!r} takes {len(self.task.fields)} text column(s) "
                f"({', '.join(self.task.fields)}): give text=" + ("" if text_b else " and text_b="))
        missing = [c for c in [*cols, *([id] if id else [])] if c not in frame.columns]
        if missing:
            raise SpeculabelError(f"no column {', '.join(map(repr, missing))} in the frame; it has "
                                  f"{', '.join(map(repr, map(str, frame.columns)))}")
        ids = frame[id].tolist() if id else frame.index.tolist()
        values = [frame[c].tolist() for c in cols]
        items = [Item(str(i), dict(zip(self.task.fields, vals, strict=True)))
                 for i, *vals in zip(ids, *values, strict=True)]
        records = self.classify(items)
        out = frame.copy()
        out["label"] = [r.label for r in records]
        out["decided_by"] = [r.decided_by for r in records]
        out["confidence"] = [r.confidence for r in records]
        out["error"] = [r.error for r in records]
        return out


def probabilities(records: Sequence[Record], classes: Sequence[str]) -> np.ndarray:
    import numpy as np

    out = np.full((len(records), len(classes)), np.nan)
    for i, r in enumerate(records):
        dist = r.distribution()
        if dist:
            out[i] = [dist.get(c, 0.0) for c in classes]
    return out
