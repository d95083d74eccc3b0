"""Scale out: the same cascade, the same records and the same resume guarantee on a Ray cluster.

``speculabel classify INPUT -o OUTDIR --engine ray`` (or :func:`classify_dataset` /
:func:`classify_to_shards` from Python) runs the cascade of a ``cascade.toml`` as a Ray Data
pipeline: one actor pool per in-process model, plain tasks for models behind servers, records
written as idempotent shards in a results directory.

| module | what |
|---|---|
| ``settings.py`` | the engine choice and its checks, the ``[ray]`` table and its flags |
| ``shards.py`` | the results directory: manifest, shard names, idempotent writes, resume |
| ``stages.py`` | the per-batch steps (prepare, vote, decide, judge, write); no Ray in it |
| ``reading.py`` | the input through Ray's readers; the pass over the ids before any model loads |
| ``ray_engine.py`` | the Ray Data pipeline and the driver's loop |
| ``cli.py`` | ``classify --engine ray``: checks, progress, exit statuses |
| ``throughput.py`` | the engine's overhead on one machine, items per hour on N nodes |

Nothing here imports Ray at import time; ``pip install 'speculabel[ray]'`` installs it.
"""

from __future__ import annotations

from speculabel.scale.settings import ENGINES, EngineError, RaySettings, check_engine, load_configs

__all__ = ["ENGINES", "EngineError", "RaySettings", "check_engine", "classify_dataset",
           "classify_to_shards", "load_configs"]


def __getattr__(name: str) -> object:
    """``classify_dataset`` and ``classify_to_shards`` without importing the engine eagerly."""
    if name in ("classify_dataset", "classify_to_shards"):
        from speculabel.scale import ray_engine

        return getattr(ray_engine, name)
    raise AttributeError(name)
