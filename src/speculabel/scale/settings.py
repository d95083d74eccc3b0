"""Which engine runs a cascade, and the Ray engine's own settings (none of which changes a label).

The Ray settings come from a ``[ray]`` table in ``cascade.toml`` and from ``classify``'s flags
(flags win), checked as strictly as the rest of the config.  They are speed and layout settings
only (pool sizes, CPUs per actor, shard size and format), so they are not part of the run's
fingerprint: the same cascade.toml gives the same records on a laptop and on a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speculabel.errors import SpeculabelError

if TYPE_CHECKING:
    from speculabel.cascade.config import CascadeConfig

ENGINES = ("local", "ray")
ShardFormat = Literal["jsonl", "parquet"]


class EngineError(SpeculabelError, ValueError):
    """The engine cannot run these settings; the message says what to do instead."""


def check_engine(engine: str, adaptive: bool) -> None:
    """Refuse an unknown engine, and an adaptive run on Ray (adaptive runs change the cascade
    while they run, which needs the single process that sees every judge label in order)."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if engine == "ray" and adaptive:
        raise EngineError(
            "adaptive runs are single-process; calibrate first (speculabel calibrate ... -o "
            "cascade.toml), then run --engine ray with the written config"
        )


class RaySettings(BaseModel):
    """How the Ray engine lays the cascade out on a cluster (``[ray]`` in cascade.toml)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: the cluster: ``auto`` (a running ``ray start`` cluster), ``ray://host:10001``, a GCS
    #: address, or none (a local instance for this run)
    address: str | None = None
    #: actors per in-process worker model (each loads its model once)
    pool_size: int = Field(default=1, ge=1)
    #: actors for an in-process judge
    judge_pool_size: int = Field(default=1, ge=1)
    #: CPUs each worker actor reserves; default: the cluster's CPUs shared by all actors, at
    #: most 1 (llama.cpp gets that many threads, at least one)
    cpus_per_actor: float | None = Field(default=None, gt=0)
    #: CPUs each judge actor reserves (default: as ``cpus_per_actor``)
    judge_cpus_per_actor: float | None = Field(default=None, gt=0)
    #: concurrent tasks per model behind a server (each keeps the backend's own
    #: ``max_in_flight`` requests open)
    server_tasks: int = Field(default=4, ge=1)
    #: records per shard at most (a killed run loses at most the shards being written)
    shard_rows: int = Field(default=256, ge=1)
    shard_format: ShardFormat = "jsonl"
    #: every model of the cascade in one actor (its pool: ``pool_size`` actors), the batch run
    #: through the steps in that process: no per-model actors splitting few cores into slivers.
    #: None: fused when the per-model actors would get less than one CPU each
    fused: bool | None = None


def pop_ray_table(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Take the ``[ray]`` table out of raw config data (so the cascade's own strict check never
    sees it, and a config written for a cluster also runs in one process)."""
    table = data.pop("ray", None)
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise EngineError(f"{source}: ray must be a table ([ray]), got {type(table).__name__}")
    return dict(table)


def make_ray_settings(table: dict[str, Any], flags: dict[str, Any], source: str) -> RaySettings:
    """The ``[ray]`` table with the flags that were given laid over it, checked."""
    data = {**table, **{k: v for k, v in flags.items() if v is not None}}
    if isinstance(data.get("cpus_per_actor"), int):  # TOML `1` is an int; strict wants a float
        data["cpus_per_actor"] = float(data["cpus_per_actor"])
    if isinstance(data.get("judge_cpus_per_actor"), int):
        data["judge_cpus_per_actor"] = float(data["judge_cpus_per_actor"])
    try:
        return RaySettings.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            key = ".".join(str(p) for p in err.get("loc", ())) or "ray"
            if err.get("type") == "extra_forbidden":
                problems.append(f"unknown key ray.{key}; known keys: "
                                f"{', '.join(RaySettings.model_fields)}")
            else:
                problems.append(f"ray.{key}: {err.get('msg')}, got {err.get('input')!r}")
        raise EngineError(f"{source}: {'; '.join(problems)}") from None


def load_configs(path: str | Path) -> tuple[CascadeConfig, RaySettings]:
    """A cascade.toml as the cascade's config and the Ray engine's settings (its ``[ray]``
    table), for Python callers (``load_config`` alone refuses a ``[ray]`` table)."""
    from speculabel.cascade.config import make_config, read_config_data

    data = read_config_data(path)
    table = pop_ray_table(data, str(path))
    return make_config(data, str(path)), make_ray_settings(table, {}, str(path))


def is_server(spec: str) -> bool:
    """A model behind a server runs as plain tasks (no model to keep loaded in an actor)."""
    from speculabel.backends.registry import kind_of

    return kind_of(spec) == "openai"


def check_ray_setup(cfg: CascadeConfig, id_column: str | None) -> None:
    """What the Ray engine cannot do, refused before anything starts, with what to do instead."""
    from speculabel.backends.registry import kind_of

    if not id_column:
        raise EngineError(
            "--engine ray needs --id-column: Ray reads the input in parallel blocks, so a row "
            "number is no stable id, and a rerun must find the same ids to skip what is done"
        )
    if cfg.judge is None:
        raise EngineError("--engine ray needs a judge (escalated items would have no record)")
    for spec in cfg.workers:
        if kind_of(spec) in ("learner", "similarity") and not cfg.models.get(spec, {}).get("frozen"):
            raise EngineError(
                f"{spec} learns from the judge's labels as they come, which needs one process "
                "that sees them in order: run it with --engine local, or use a frozen fitted "
                "worker (written by speculabel calibrate)"
            )
