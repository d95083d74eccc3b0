"""``cascade.toml``: the settings of one cascade, written by ``calibrate`` and read by ``classify``.

Example::

    task = "sentiment"                 # built-in name or path to a task TOML
    workers = ["smollm2-135m", "gemma3-270m", "qwen2.5-0.5b"]
    judge = "qwen2.5-1.5b"
    policy = "confident-majority"      # majority | unanimous | confident-majority | weighted
    threshold = 0.8
    early_exit = false
    parallel_workers = true
    batch_size = 8

    [weights]                          # for policy = "weighted"
    "smollm2-135m" = 0.4

    [calibration."gemma3-270m"]        # optional per-model confidence calibration
    temperature = 1.3
    offsets = { negative = -1.2, neutral = -0.9, positive = -1.1 }

    [models."openai:qwen2.5-0.5b@http://127.0.0.1:8081/v1"]   # per-model backend options
    api_key_env = "MY_API_KEY"
    max_in_flight = 8
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speculabel.policy import POLICIES

# Measured (bench, TweetEval test): smollm2-135m is below chance on sentiment (17 % accuracy,
# 16 % agreement with the judge) and only adds cost, so the defaults leave it out. The VADER
# lexicon costs 0.1 ms and, paired with gemma3-270m, gave the best speedup at >= 80 %
# end-to-end agreement with the judge; it only knows sentiment.
DEFAULT_WORKERS = ("gemma3-270m", "qwen2.5-0.5b")
TASK_DEFAULT_WORKERS = {"sentiment": ("vader", "gemma3-270m")}
DEFAULT_JUDGE = "qwen2.5-1.5b"


def default_workers(task: str) -> list[str]:
    """The default workers for a task (built-in name or TOML path)."""
    return list(TASK_DEFAULT_WORKERS.get(task, DEFAULT_WORKERS))


class ConfigError(ValueError):
    """The config file is invalid; the message names the file and the key."""


@dataclass
class CascadeConfig:
    task: str = "sentiment"
    workers: list[str] = field(default_factory=list)  # empty: default_workers(task)
    judge: str | None = DEFAULT_JUDGE
    policy: str = "majority"
    threshold: float | None = None
    early_exit: bool = False
    parallel_workers: bool = False
    batch_size: int = 8
    weights: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self, source: str = "config") -> None:
        if not self.workers:
            self.workers = default_workers(self.task)
        if len(self.workers) > 3:
            raise ConfigError(f"{source}: at most three workers, got {len(self.workers)}")
        if self.policy not in POLICIES:
            raise ConfigError(
                f"{source}: unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}"
            )
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"{source}: threshold must be in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"{source}: batch_size must be >= 1")


_KEYS = {f for f in CascadeConfig.__dataclass_fields__}


def load_config(path: str | Path) -> CascadeConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    cfg = CascadeConfig()
    for key, value in data.items():
        setattr(cfg, key, value)
    if isinstance(cfg.workers, str):
        cfg.workers = [w.strip() for w in cfg.workers.split(",") if w.strip()]
    cfg.validate(str(p))
    return cfg


def dump_config(cfg: CascadeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task": cfg.task,
        "workers": list(cfg.workers),
        "policy": cfg.policy,
        "early_exit": cfg.early_exit,
        "parallel_workers": cfg.parallel_workers,
        "batch_size": cfg.batch_size,
    }
    if cfg.judge:
        out["judge"] = cfg.judge
    if cfg.threshold is not None:
        out["threshold"] = float(cfg.threshold)
    for key in ("weights", "calibration", "models"):
        if getattr(cfg, key):
            out[key] = getattr(cfg, key)
    return out


def save_config(cfg: CascadeConfig, path: str | Path) -> None:
    import tomli_w

    Path(path).write_text(tomli_w.dumps(dump_config(cfg)), encoding="utf-8")
