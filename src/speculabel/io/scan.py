"""An input table streamed twice, so that a run of any length keeps no rows in memory.

:func:`~speculabel.io.tables.read_items` gives every bad row without an id of its own an id no
other row has (:func:`~speculabel.io.tables.with_row_ids`), which needs every id of the file
before the first entry: it holds the whole table.  :class:`TableScan` gets the same entries, with
the same ids, in two passes:

1. **scan** (when it is created, before any model loads): every row is read and checked (all
   :class:`~speculabel.io.tables.InputError`\\ s are raised here) and leaves a 16-byte key of its
   id (:mod:`speculabel.io.idset`) and one byte (item or bad row).  Sorting the keys finds the
   duplicate ids; the rows that need an id get theirs, as ``with_row_ids`` would;
2. **entries** (:meth:`TableScan.entries`, lazy): the file is read again and each entry comes
   out as it is read.  Duplicates are found by comparing the ids themselves, but only for the ids
   the scan saw more than once.

What grows with the rows: 17 bytes a row while scanning (about 50 at the sort, for a moment), and
a string per bad row that needs an id; :meth:`count_done` frees the keys.  The input must not
change during a run (checked by size and modification time before the second pass).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from speculabel.io.idset import KEY_BYTES, NO_KEY, IdSet, id_key, keys_array
from speculabel.io.tables import InputError, RowError, read_rows
from speculabel.records import Item
from speculabel.tasks import Task

#: keys compared with the results file at a time (bounds the temporary arrays)
CHUNK = 1 << 16


class _Recorder(MutableMapping[str, int]):
    """Pass 1's ``seen``: notes the key of the id ``read_rows`` would remember for the row in
    hand, and says no id was seen before (the duplicates are found afterwards, by sorting)."""

    def __init__(self) -> None:
        self.key = NO_KEY

    def __contains__(self, item_id: object) -> bool:
        return False

    def __getitem__(self, item_id: str) -> int:
        raise KeyError(item_id)

    def __setitem__(self, item_id: str, row: int) -> None:
        self.key = id_key(item_id)

    def __delitem__(self, item_id: str) -> None:
        raise KeyError(item_id)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Repeated(MutableMapping[str, int]):
    """Pass 2's ``seen``: the first row of each id the scan saw more than once, by the id
    itself (exact); every other id is never looked up again."""

    def __init__(self, repeated: set[bytes]) -> None:
        self.repeated = repeated
        self.first: dict[str, int] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.first

    def __getitem__(self, item_id: str) -> int:
        return self.first[item_id]

    def __setitem__(self, item_id: str, row: int) -> None:
        if self.repeated and id_key(item_id) in self.repeated:
            self.first[item_id] = row

    def __delitem__(self, item_id: str) -> None:
        del self.first[item_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.first)

    def __len__(self) -> int:
        return len(self.first)


class TableScan:
    """A table's entries (items and bad rows, ids as :func:`read_items` gives them), scanned
    once when created and streamed by :meth:`entries` (see the module docstring)."""

    def __init__(self, path: str | Path, task: Task, *, columns: dict[str, str] | None = None,
                 id_column: str | None = None, delimiter: str | None = None,
                 limit: int | None = None) -> None:
        self.path = Path(path)
        self.task, self.columns, self.id_column, self.delimiter = task, columns, id_column, delimiter
        self.limit = limit
        self.n_rows = 0  # rows within the limit
        self._repeated: set[bytes] = set()
        self._assigned: dict[int, str] = {}  # row -> the id given to a bad row without one
        self._keys = bytearray()
        self._kinds = bytearray()  # 1: an item, 0: a bad row
        self._scan()
        st = self.path.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)

    def _read(self, seen: MutableMapping[str, int]
              ) -> Generator[tuple[Item | RowError, Any], None, None]:
        return read_rows(self.path, self.task, columns=self.columns, id_column=self.id_column,
                         delimiter=self.delimiter, seen=seen)

    def _scan(self) -> None:
        rec = _Recorder()
        need: list[int] = []  # rows within the limit whose entry has no id
        cap = self.limit if self.limit is not None else -1
        for entry, _ in self._read(rec):
            self._keys += rec.key
            rec.key = NO_KEY
            if cap < 0 or self.n_rows < cap:
                self.n_rows += 1
                self._kinds.append(isinstance(entry, Item))
                if isinstance(entry, RowError) and entry.id is None:
                    need.append(entry.row)
        self._give_ids(need)
        del self._keys[self.n_rows * KEY_BYTES:]

    def _give_ids(self, need: list[int]) -> None:
        """Find the duplicates; give each row without an id one no other row has (the ids of
        :func:`~speculabel.io.tables.with_row_ids`)."""
        import numpy as np

        keys = keys_array(self._keys)
        if not len(keys):
            return
        ordered = np.sort(keys)
        real = ordered != b""
        first = real.copy()
        first[1:] &= ordered[1:] != ordered[:-1]
        repeated = real & ~first
        if repeated.any():
            self._repeated = set(ordered[repeated].tolist())
            marks = np.flatnonzero(np.isin(keys[:self.n_rows],
                                           np.array(sorted(self._repeated), dtype=keys.dtype)))
            met: set[bytes] = set()
            for r in marks.tolist():  # a repeat after its first row is a duplicate
                key = bytes(keys[r])
                if key in met:
                    need.append(r + 1)
                    self._kinds[r] = 0  # read as an item above, a duplicate is a bad row
                met.add(key)
        if not need:
            return
        taken = IdSet.from_sorted(ordered[first])
        del ordered, real, first, repeated, keys
        for row in sorted(need):
            candidates = [str(row), f"row-{row}"]
            n = 2
            while all(taken.has_key(id_key(c)) for c in candidates):
                candidates.append(f"row-{row}-{n}")
                n += 1
            new = next(c for c in candidates if not taken.has_key(id_key(c)))
            taken.add(new)
            self._assigned[row] = new
            self._keys[(row - 1) * KEY_BYTES: row * KEY_BYTES] = id_key(new)

    def count_done(self, done: IdSet) -> tuple[int, int, int]:
        """``(rows done, items left, bad rows left)`` against the ids of a results file; frees
        the scan's keys (call it once)."""
        import numpy as np

        keys = keys_array(self._keys)
        kinds = np.frombuffer(bytes(self._kinds), dtype=np.uint8).astype(bool)
        skipped = items = 0
        for start in range(0, len(keys), CHUNK):
            hit = done.contains_keys(keys[start:start + CHUNK])
            skipped += int(hit.sum())
            items += int((kinds[start:start + CHUNK] & ~hit).sum())
        del keys
        self._keys, self._kinds = bytearray(), bytearray()
        return skipped, items, self.n_rows - skipped - items

    def entries(self) -> Iterator[Item | RowError]:
        """The entries within the limit, in file order, read as they are used."""
        st = self.path.stat()
        if (st.st_size, st.st_mtime_ns) != self._stamp:
            raise InputError(f"{self.path} changed after the run began; rerun the same command")
        if not self.n_rows:
            return
        rows = self._read(_Repeated(self._repeated))
        with contextlib.closing(rows):
            for entry, _ in rows:
                if isinstance(entry, RowError) and entry.id is None:
                    entry = replace(entry, id=self._assigned[entry.row])
                yield entry
                if (entry.row or 0) >= self.n_rows:
                    return
