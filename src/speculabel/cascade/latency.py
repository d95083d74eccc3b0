"""Latencies summed up in bounded memory: a run of any length keeps its mean and 95th
percentile without one number per record.

Exact for the first :data:`EXACT` values (the percentile as ``numpy.percentile`` gives it); after
that every value goes into a histogram of :data:`BINS` log-spaced bins from 1 microsecond to
10,000 s (each about 1.1 % wide), and the percentile is read from it (within a bin's width).  The
mean is always exact.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator

#: values kept one by one before the histogram takes over (8 bytes each)
EXACT = 100_000
#: histogram bins between LOW and HIGH seconds (log-spaced); below LOW: bin 0, above HIGH: last
BINS = 2048
LOW, HIGH = 1e-6, 1e4
_STEP = math.log(HIGH / LOW) / (BINS - 2)


class Latencies:
    """``append``/``extend`` seconds; ``len``, :meth:`mean`, :meth:`percentile`."""

    def __init__(self) -> None:
        self._exact: array[float] | None = array("d")
        self._hist: array[int] | None = None
        self._n = 0
        self._sum = 0.0

    def append(self, x: float) -> None:
        x = float(x)
        self._n += 1
        self._sum += x
        if self._exact is not None:
            self._exact.append(x)
            if len(self._exact) > EXACT:
                self._to_histogram()
        else:
            self._count(x)

    def extend(self, xs: Iterable[float]) -> None:
        for x in xs:
            self.append(x)

    def _to_histogram(self) -> None:
        exact, self._exact = self._exact, None
        self._hist = array("q", bytes(8 * BINS))
        for x in exact or ():
            self._count(x)

    def _count(self, x: float) -> None:
        assert self._hist is not None
        i = 0 if x < LOW else min(BINS - 1, 1 + int(math.log(x / LOW) / _STEP))
        self._hist[i] += 1

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[float]:
        """The exact values (empty once the histogram has taken over)."""
        return iter(self._exact or ())

    def mean(self) -> float:
        return self._sum / self._n if self._n else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (exact, else the geometric middle of its bin)."""
        if not self._n:
            return 0.0
        if self._exact is not None:
            import numpy as np

            return float(np.percentile(np.frombuffer(self._exact, dtype=np.float64), q))
        assert self._hist is not None
        rank = q / 100 * (self._n - 1)
        seen = 0
        for i, c in enumerate(self._hist):
            seen += c
            if seen > rank:
                if i == 0:
                    return 0.0 if c else LOW
                return LOW * math.exp((i - 0.5) * _STEP)
        return HIGH
