"""The hardware's limit for a cascade configuration, set beside the computed and measured
speedups: how fast this machine could run it if nothing but the models' own work cost time.

The limit's wall time is

* the **embedder's own batch throughput**: every distinct text of the items embedded once, in
  one call (the embedder batches it as it likes), timed cold, once per embedder however many
  workers share it (a learner and a similarity worker on MiniLM: one pass);
* plus the workers that embed nothing (a lexicon, an LLM) at the cost their stored votes record;
* plus the **judge's calls at its marginal cost**: the judge-alone timing divided by the items
  (no loading, the same batches), times the judge calls the measured cascade made.

Limit speedup = judge alone's wall time / the limit's; ``measured_over_limit`` = the measured
cascade's wall time / the limit's (1.0: the run goes as fast as the hardware allows; the
issue's goal is at most 1.5).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from speculabel.backends.base import Backend, unwrap
from speculabel.records import Item


def embedder_of(backend: Backend) -> Any | None:
    """The embedding function a worker computes its features with (learning and similarity
    workers), or None for a worker that embeds nothing."""
    return getattr(unwrap(backend), "_embed", None)


def distinct_texts(items: Sequence[Item]) -> list[str]:
    """Every text of the items' fields once, in first-seen order (what the embedders embed)."""
    return list(dict.fromkeys(str(t) for it in items for t in it.fields.values()))


def time_embedders(backends: Sequence[Backend], items: Sequence[Item],
                   clock: Callable[[], float] = time.perf_counter) -> dict[int, float]:
    """Seconds for each distinct embedder of ``backends`` (by ``id``) to embed the items'
    distinct texts once, cold, in one call.  Its cache is dropped before and after, so the
    cascade timings that follow pay for every text themselves."""
    texts = distinct_texts(items)
    out: dict[int, float] = {}
    for b in backends:
        emb = embedder_of(b)
        if emb is None or id(emb) in out:
            continue
        forget = getattr(emb, "forget", None)
        if callable(forget):
            forget()
        t0 = clock()
        emb(texts)
        out[id(emb)] = clock() - t0
        if callable(forget):
            forget()
    return out


def hardware_limit(*, judge_wall_s: float, n_items: int, judge_calls: int, embed_s: float,
                   workers_s: float = 0.0, cascade_wall_s: float | None = None
                   ) -> dict[str, float]:
    """The limit of a configuration (see the module docstring): its parts, its wall time, the
    speedup it allows over the judge alone, and the measured cascade's wall time over it."""
    if n_items <= 0 or judge_wall_s <= 0:
        nan = math.nan
        return {"embed_s": embed_s, "workers_s": workers_s, "judge_marginal_s": nan,
                "judge_calls": judge_calls, "judge_s": nan, "wall_s": nan, "speedup": nan,
                "measured_over_limit": nan}
    marginal = judge_wall_s / n_items
    judge_s = judge_calls * marginal
    wall = embed_s + workers_s + judge_s
    return {
        "embed_s": embed_s,
        "workers_s": workers_s,
        "judge_marginal_s": marginal,
        "judge_calls": judge_calls,
        "judge_s": judge_s,
        "wall_s": wall,
        "speedup": judge_wall_s / wall if wall > 0 else math.inf,
        "measured_over_limit": (cascade_wall_s / wall if cascade_wall_s is not None and wall > 0
                                else math.nan),
    }


def config_limit(workers: Sequence[str], loaded: dict[str, Backend],
                 embed_times: dict[int, float], stored_latency: Callable[[str], list[float]],
                 *, judge_wall_s: float, n_items: int, judge_calls: int,
                 cascade_wall_s: float) -> dict[str, float]:
    """:func:`hardware_limit` for one configuration: its workers' embedders (each once) and the
    stored latencies of its workers that embed nothing."""
    embed_s = 0.0
    seen: set[int] = set()
    workers_s = 0.0
    for w in workers:
        emb = embedder_of(loaded[w])
        if emb is None:
            workers_s += float(sum(stored_latency(w)))
        elif id(emb) not in seen:
            seen.add(id(emb))
            embed_s += embed_times.get(id(emb), 0.0)
    return hardware_limit(judge_wall_s=judge_wall_s, n_items=n_items, judge_calls=judge_calls,
                          embed_s=embed_s, workers_s=workers_s, cascade_wall_s=cascade_wall_s)
