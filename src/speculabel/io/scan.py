"""An input table streamed twice, so that a run of any length keeps no rows in memory.

:func:`~speculabel.io.tables.read_items` gives every bad row without an id of its own an id no
other row has (:func:`~speculabel.io.tables.with_row_ids`), which needs every id of the file
before the first entry: it holds the whole table.  :class:`TableScan` gets the same entries, with
the same ids, reading the file as a stream:

1. **scan** (when it is created, before any model loads): every row is read and checked (all
   :class:`~speculabel.io.tables.InputError`\\ s are raised here), counted, and leaves an 8-byte
   key of its id.  The keys, sorted in place, show whether any id repeats; only then is the file
   read once more to find the duplicate rows (by the ids themselves, exact).  The rows that need
   an id get theirs, as ``with_row_ids`` would, and the keys are freed;
2. **entries** (:meth:`TableScan.entries`, lazy): the file is read again and each entry comes
   out as it is read; duplicates are found by comparing the ids themselves, kept only for the
   ids whose key repeats.

What grows with the rows: 8 bytes a row during the scan (freed before any model loads), and a
string per bad row that needs an id or id that repeats.  A resumed run reads the file once more to
count what is left (:meth:`count_done`).  An 8-byte key that two different ids share (odds about
``n**2 / 2**65``) costs only that read or a row-number id skipped, never a wrong entry.  The input
must not change during a run (checked by size and modification time before each later pass).
"""

from __future__ import annotations

import contextlib
import hashlib
from array import array
from collections.abc import Generator, Iterator, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from speculabel.io.idset import IdSet
from speculabel.io.tables import InputError, RowError, read_rows
from speculabel.records import Item
from speculabel.tasks import Task


def short_key(item_id: str) -> int:
    """The scan's 8-byte key of an id (BLAKE2b), as an unsigned integer."""
    raw = item_id.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


class _Recorder(MutableMapping[str, int]):
    """Pass 1's ``seen``: notes the id ``read_rows`` would remember for the row in hand (its
    key, and the id itself), and says no id was seen before (duplicates are found after)."""

    def __init__(self) -> None:
        self.id: str | None = None

    def __contains__(self, item_id: object) -> bool:
        return False

    def __getitem__(self, item_id: str) -> int:
        raise KeyError(item_id)

    def __setitem__(self, item_id: str, row: int) -> None:
        self.id = item_id

    def __delitem__(self, item_id: str) -> None:
        raise KeyError(item_id)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Repeated(MutableMapping[str, int]):
    """Pass 2's ``seen``: the first row of each id whose key the scan saw more than once, by the
    id itself (exact); every other id is never looked up again."""

    def __init__(self, repeated: set[int]) -> None:
        self.repeated = repeated
        self.first: dict[str, int] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.first

    def __getitem__(self, item_id: str) -> int:
        return self.first[item_id]

    def __setitem__(self, item_id: str, row: int) -> None:
        if self.repeated and short_key(item_id) in self.repeated:
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
        self.n_items = 0  # of those, items (the others are bad rows)
        self._repeated: set[int] = set()  # keys of ids read more than once
        self._assigned: dict[int, str] = {}  # row -> the id given to a bad row without one
        self._stamp = self._stat()
        self._scan()

    def _stat(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except OSError:  # missing: read_rows says so, naming the file
            return -1, -1
        return st.st_size, st.st_mtime_ns

    def _read(self, seen: MutableMapping[str, int]
              ) -> Generator[tuple[Item | RowError, Any], None, None]:
        if self._stat() != self._stamp:
            raise InputError(f"{self.path} changed after the run began; rerun the same command")
        return read_rows(self.path, self.task, columns=self.columns, id_column=self.id_column,
                         delimiter=self.delimiter, seen=seen)

    def _within(self, row: int) -> bool:
        return self.limit is None or row <= self.limit

    def _scan(self) -> None:
        import numpy as np

        rec = _Recorder()
        keys = array("Q")  # 8 bytes a row, freed at the end of the scan
        need: list[int] = []  # rows within the limit whose entry has no id
        for entry, _ in self._read(rec):
            if rec.id is not None:
                keys.append(short_key(rec.id))
                rec.id = None
            if self._within(entry.row or 0):
                self.n_rows += 1
                self.n_items += isinstance(entry, Item)
                if isinstance(entry, RowError) and entry.id is None:
                    need.append(entry.row)
        taken = np.frombuffer(keys, dtype=np.uint64)
        taken.sort()  # in place: no copy
        repeated = taken[1:][taken[1:] == taken[:-1]]
        if repeated.size:
            self._repeated = set(repeated.tolist())
            need.extend(self._duplicates())
        del repeated
        if need:
            self._give_ids(sorted(need), taken)

    def _duplicates(self) -> list[int]:
        """The rows within the limit whose id an earlier row has (read again, compared by the
        ids themselves, only for the ids whose key repeats); each was counted as an item or a
        bad row with its own id above, and is a bad row without one."""
        rec = _Recorder()
        first: set[str] = set()
        out: list[int] = []
        rows = self._read(rec)
        with contextlib.closing(rows):
            for entry, _ in rows:
                row = entry.row or 0
                if not self._within(row):
                    break
                if rec.id is not None and short_key(rec.id) in self._repeated:
                    if rec.id in first:
                        out.append(row)
                        self.n_items -= isinstance(entry, Item)
                    first.add(rec.id)
                rec.id = None
        return out

    def _give_ids(self, need: list[int], taken: Any) -> None:
        """Give each row without an id one no other row has (those of ``with_row_ids``);
        ``taken``: the sorted keys of every id of the file."""
        given: set[str] = set()

        def is_taken(c: str) -> bool:
            k = short_key(c)
            i = int(taken.searchsorted(k))
            return c in given or (i < len(taken) and int(taken[i]) == k)

        for row in need:
            candidates = [str(row), f"row-{row}"]
            n = 2
            while all(is_taken(c) for c in candidates):
                candidates.append(f"row-{row}-{n}")
                n += 1
            new = next(c for c in candidates if not is_taken(c))
            given.add(new)
            self._assigned[row] = new

    def count_done(self, done: IdSet) -> tuple[int, int, int]:
        """``(rows done, items left, bad rows left)`` against the ids of a results file: read
        from the scan's counts when it is empty, else by reading the entries once more."""
        if not len(done):
            return 0, self.n_items, self.n_rows - self.n_items
        skipped = items = 0
        for e in self.entries():
            if e.id in done:
                skipped += 1
            else:
                items += isinstance(e, Item)
        return skipped, items, self.n_rows - skipped - items

    def entries(self) -> Iterator[Item | RowError]:
        """The entries within the limit, in file order, read as they are used."""
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
