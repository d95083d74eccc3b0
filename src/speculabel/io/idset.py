"""A compact set of item ids: what a streamed run keeps per row so that resume and duplicate
detection stay exact without holding the rows or their records.

Why digests: a Python set of a million id strings costs 100+ bytes an id; a sorted numpy array of
16-byte digests costs 16.  Each id is a 120-bit BLAKE2b digest followed by a ``0x01`` byte (a
trailing byte that is never NUL, because numpy's fixed-width bytes drop trailing NULs), so two
different ids share a key with probability about ``n**2 / 2**121`` (1e-24 for a million ids): the
key is the id.  New keys go to a small Python set, merged into the sorted array every
:data:`MERGE_AT` additions (one linear ``np.insert``), so memory is 16 bytes an id plus a bounded
buffer.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: bytes per key (numpy dtype ``S16``)
KEY_BYTES = 16
#: an empty key: a row that has no id of its own (never a real key: those end in 0x01)
NO_KEY = b"\0" * KEY_BYTES
#: pending keys merged into the sorted array at this many (bounds the Python-object buffer)
MERGE_AT = 1 << 13


def id_key(item_id: str) -> bytes:
    """The 16-byte key of an id (see the module docstring)."""
    raw = item_id.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=KEY_BYTES - 1).digest() + b"\x01"


def keys_array(buf: bytes | bytearray) -> Any:
    """Concatenated keys as a numpy ``S16`` array (a view of ``buf``, no copy)."""
    import numpy as np

    return np.frombuffer(buf, dtype=f"S{KEY_BYTES}")


class IdSet:
    """A growing set of ids by key: ``add``, ``in``, ``len`` and a vectorised
    :meth:`contains_keys`."""

    def __init__(self) -> None:
        import numpy as np

        self._sorted: Any = np.empty(0, dtype=f"S{KEY_BYTES}")
        self._new: set[bytes] = set()

    @classmethod
    def from_sorted(cls, keys: Any) -> IdSet:
        """The set of a sorted ``S16`` array of distinct keys (kept, not copied)."""
        out = cls()
        out._sorted = keys
        return out

    @classmethod
    def from_keys(cls, buf: bytearray) -> IdSet:
        """The set of concatenated keys (repeats and :data:`NO_KEY` ignored), sorted in place
        in ``buf``'s memory (kept: no copy when the keys are distinct)."""
        import numpy as np

        arr = keys_array(buf)
        arr.sort()
        if len(arr) and (arr[0] == b"" or bool((arr[1:] == arr[:-1]).any())):
            arr = np.unique(arr[arr != b""])
        return cls.from_sorted(arr)

    def __len__(self) -> int:
        return len(self._sorted) + len(self._new)

    def _in_sorted(self, key: bytes) -> bool:
        i = int(self._sorted.searchsorted(key))
        return i < len(self._sorted) and bytes(self._sorted[i]) == key

    def has_key(self, key: bytes) -> bool:
        return key in self._new or self._in_sorted(key)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.has_key(id_key(item_id))

    def add_key(self, key: bytes) -> None:
        if key in self._new or self._in_sorted(key):
            return
        self._new.add(key)
        if len(self._new) >= MERGE_AT:
            self._merge()

    def add(self, item_id: str) -> None:
        self.add_key(id_key(item_id))

    def _merge(self) -> None:
        import numpy as np

        if not self._new:
            return
        new = np.sort(np.array(list(self._new), dtype=f"S{KEY_BYTES}"))
        self._sorted = np.insert(self._sorted, self._sorted.searchsorted(new), new)
        self._new.clear()

    def contains_keys(self, keys: Any) -> Any:
        """A boolean array: is each key (an ``S16`` array) in the set?"""
        import numpy as np

        self._merge()
        if not len(self._sorted) or not len(keys):
            return np.zeros(len(keys), dtype=bool)
        pos = np.minimum(self._sorted.searchsorted(keys), len(self._sorted) - 1)
        return np.asarray(self._sorted[pos] == keys)
