"""``cascade.toml``: the settings of one cascade, written by ``calibrate`` and read by ``classify``.

Example::

    task = "sentiment"                 # built-in name, or a task TOML (relative to this file)
    workers = ["vader", "gemma3-270m"]
    judge = "qwen2.5-1.5b"
    policy = "confident-majority"      # majority | unanimous | confident-majority | weighted
    threshold = 0.8                    # confident-majority and weighted only
    early_exit = false
    parallel_workers = false
    batch_size = 8

    [weights]                          # for policy = "weighted"
    "gemma3-270m" = 0.4

    [calibration."gemma3-270m"]        # optional per-model confidence calibration
    temperature = 1.3
    offsets = { negative = -1.2, neutral = -0.9, positive = -1.1 }

    [models."openai:qwen2.5-0.5b@http://127.0.0.1:8081/v1"]   # per-model backend options
    api_key_env = "MY_API_KEY"
    max_in_flight = 8

    [models."similarity:minilm"]       # a fitted worker, frozen (written by calibrate)
    directory = "cascade.fitted/similarity-minilm"   # relative to this file
    frozen = true

    [certificate]                      # what calibrate certified (for the record)
    scope = "dataset"
    target = 0.85

Every value is type-checked (pydantic, strict): ``threshold = "0.8"`` or ``early_exit = "yes"``
is refused with the file and the key named, never coerced or ignored.  Flags on the command
line are merged into the same data and checked the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from speculabel.errors import SpeculabelError
from speculabel.policy import PolicyError, RuleName, check_policy

# Measured (make bench-sentiment / bench-tickets, N=2000, judge qwen2.5-1.5b): on both built-in
# tasks the workers that pay are the near-free ones that learn from the judge as the run goes
# (they abstain until they have a few labels of every class).  Under the default majority rule:
# sentiment vader + learner:minilm 49 % judge calls, 2.25x computed (vader + gemma3-270m: 57 %,
# 1.23x); similar ticket similarity:minilm + learner:minilm 8 % judge calls, 6.25x, 80 % gold
# accuracy (gemma3-270m + qwen2.5-0.5b: 37 %, 0.80x).  Other tasks (a custom TOML task) get two
# small LLMs, which need no labels; smollm2-135m is below chance on sentiment and in no default.
DEFAULT_WORKERS = ("gemma3-270m", "qwen2.5-0.5b")
TASK_DEFAULT_WORKERS = {
    "sentiment": ("vader", "learner:minilm"),
    "similar-ticket": ("similarity:minilm", "learner:minilm"),
}
DEFAULT_JUDGE = "qwen2.5-1.5b"
#: defaults for --engine ray, where a worker cannot learn from the judge as the run goes (that
#: needs one process seeing the labels in order): workers that need no labels
RAY_TASK_DEFAULT_WORKERS = {"sentiment": ("vader", "gemma3-270m")}


def ray_default_workers(task: str) -> list[str]:
    """The default workers of ``--engine ray`` for a task (no learning worker)."""
    return list(RAY_TASK_DEFAULT_WORKERS.get(task, DEFAULT_WORKERS))


def default_workers(task: str) -> list[str]:
    """The default workers for a task (built-in name or TOML path)."""
    return list(TASK_DEFAULT_WORKERS.get(task, DEFAULT_WORKERS))


class ConfigError(SpeculabelError, ValueError):
    """The settings are invalid; the message names the file (or flag) and the key."""


@dataclass(frozen=True)
class AdaptiveSettings:
    """What the user chose for an adaptive run (flags or cascade.toml); what they mean:
    :mod:`speculabel.adaptive.plan`.  Kept here, with the other settings, so that reading a
    config never imports the adaptive run."""

    target: float = 0.85
    delta: float = 0.1
    scope: Literal["dataset", "workers"] = "dataset"
    audit_rate: float = 0.05
    warmup: int = 200
    recertify_every: int = 500
    seed: int = 0
    # "rank": the whole input is known (a file): fit, rank, buy labels until a cut is certified
    # (speculabel.adaptive.finite); "stream": warm-up, audit and looks as items come
    method: Literal["rank", "stream"] = "rank"
    fit: int | None = None  # rank: judge labels to fit learning workers on (None: by input size)

    def check(self) -> None:
        if self.method not in ("rank", "stream"):
            raise ValueError(f"--adaptive-method is rank or stream, not {self.method!r}")
        if self.method == "rank" and self.scope != "dataset":
            raise ValueError("--adaptive-method rank certifies scope dataset; for scope workers "
                             "use --adaptive-method stream")
        if self.fit is not None and self.fit < 0:
            raise ValueError(f"--fit must be at least 0, got {self.fit}")
        if self.scope not in ("dataset", "workers"):
            raise ValueError(f"adaptive runs certify scope dataset or workers, not {self.scope!r}")
        if not 0 < self.target < 1:
            raise ValueError("--target must be between 0 and 1, both excluded, "
                             f"got {self.target:g}")
        if not 0 < self.delta < 1:
            raise ValueError("--delta must be between 0 and 1, both excluded, "
                             f"got {self.delta:g}")
        if not 0 < self.audit_rate < 1:
            raise ValueError("--audit-rate must be between 0 and 1, both excluded, "
                             f"got {self.audit_rate:g}")
        if self.warmup < 2:
            raise ValueError(f"--warmup must be at least 2 items, got {self.warmup}")
        if self.recertify_every < 1:
            raise ValueError("--recertify-every must be at least 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)



class ModelCalibrationEntry(BaseModel):
    """``[calibration."model"]``: a temperature and/or contextual offsets per label."""

    model_config = ConfigDict(extra="forbid", strict=True)
    temperature: float = Field(1.0, gt=0)
    offsets: dict[str, float] = Field(default_factory=dict)


class CascadeConfig(BaseModel):
    """The settings of one cascade (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: str = "sentiment"
    workers: list[str] = Field(default_factory=list)  # empty: default_workers(task)
    judge: str | None = DEFAULT_JUDGE
    policy: RuleName = "majority"
    threshold: float | None = None
    early_exit: bool = False
    parallel_workers: bool = False
    batch_size: int = Field(8, ge=1)
    weights: dict[str, float] = Field(default_factory=dict)
    calibration: dict[str, ModelCalibrationEntry] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: every item goes to the judge (the baseline in the same output format); workers unused
    judge_only: bool = False
    #: what ``calibrate`` certified for these settings (informational, never changes a label)
    certificate: dict[str, Any] = Field(default_factory=dict)
    #: an adaptive run: learn from the judge, certify the threshold on a random audit (see
    #: :mod:`speculabel.adaptive`); the keys below apply to it only
    adaptive: bool = False
    target: float = Field(0.85, gt=0, lt=1)
    delta: float = Field(0.1, gt=0, lt=1)
    scope: Literal["dataset", "workers"] = "dataset"
    audit_rate: float = Field(0.05, gt=0, lt=1)
    warmup: int = Field(200, ge=2)
    recertify_every: int = Field(500, ge=1)
    seed: int = 0
    #: rank (a finite input: fit, rank, certify a cut) or stream (warm-up, audit, looks);
    #: None: rank for scope dataset, stream for scope workers
    adaptive_method: Literal["rank", "stream"] | None = None
    fit: int | None = Field(None, ge=0)  # rank: judge labels to fit learning workers on

    @field_validator("workers", mode="before")
    @classmethod
    def _split_workers(cls, value: Any) -> Any:
        if isinstance(value, str):  # "a,b" is accepted as well as ["a", "b"]
            return [w.strip() for w in value.split(",") if w.strip()]
        return value

    @field_validator("task")
    @classmethod
    def _task_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the task must not be empty (a built-in name or a task TOML file)")
        return value

    @field_validator("judge")
    @classmethod
    def _judge_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the judge must not be empty: escalated items would have no one to "
                             "decide them (name a model spec)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CascadeConfig:
        if self.adaptive:
            if self.judge_only:
                raise ValueError("an adaptive run needs workers: leave out judge_only")
            if self.judge is None:
                raise ValueError("an adaptive run needs a judge")
            if self.threshold is not None:
                raise ValueError("an adaptive run certifies its own threshold: leave out "
                                 "threshold")
            if self.policy not in ("majority", "confident-majority"):
                raise ValueError(f"an adaptive run uses confident-majority, not {self.policy!r}")
            self.policy = "confident-majority"
        if self.judge_only:
            if self.judge is None:
                raise ValueError("judge_only needs a judge")
            self.workers = []
            return self
        if not self.workers:
            self.workers = default_workers(self.task)
        if not 1 <= len(self.workers) <= 3:
            raise ValueError(f"one to three workers, got {len(self.workers)}: {self.workers}")
        if any(not w.strip() for w in self.workers):
            raise ValueError(f"a worker spec is empty: {self.workers}")
        if len(set(self.workers)) != len(self.workers):
            raise ValueError(f"the same worker is listed twice: {self.workers}")
        if self.judge is not None and self.judge in self.workers:
            raise ValueError(f"{self.judge} cannot be both a worker and the judge")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if not self.adaptive:
            try:
                check_policy(self.policy, self.threshold)
            except PolicyError as e:
                raise ValueError(str(e)) from None
        return self

    def adaptive_settings(self) -> AdaptiveSettings:
        method = self.adaptive_method or ("rank" if self.scope == "dataset" else "stream")
        return AdaptiveSettings(self.target, self.delta, self.scope, self.audit_rate,
                                self.warmup, self.recertify_every, self.seed, method, self.fit)

    # ------------------------------------------------------------------ identity
    def decision_settings(self) -> dict[str, Any]:
        """Everything that can change a record's label or decider (not speed settings)."""
        return {
            "task": self.task,
            "judge_only": self.judge_only,
            "workers": list(self.workers),
            "judge": self.judge,
            "policy": self.policy,
            "threshold": self.threshold,
            "early_exit": self.early_exit,
            "weights": dict(sorted(self.weights.items())),
            "calibration": {k: v.model_dump() for k, v in sorted(self.calibration.items())},
            "models": {k: self.models[k] for k in sorted(self.models)},
            **({"adaptive": self.adaptive_settings().to_json()} if self.adaptive else {}),
        }

    def fingerprint(self, extra: dict[str, Any] | None = None) -> str:
        blob = json.dumps({**self.decision_settings(), **(extra or {})}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _describe(err: Any) -> str:
    """One pydantic error as a sentence that names the key, what it must be and what it got."""
    loc = [str(p) for p in err.get("loc", ())]
    key = ".".join(loc) or "settings"
    kind = err.get("type", "")
    value = err.get("input")
    if kind == "extra_forbidden":
        known = ", ".join(CascadeConfig.model_fields) if len(loc) == 1 else "see the docs"
        return f"unknown key {loc[-1]!r}; known keys: {known}"
    if kind == "literal_error" and loc == ["policy"]:
        return f"unknown policy {value!r}; choose one of: {', '.join(get_args(RuleName))}"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if not loc:  # a check of the whole settings: the caller's prefix already names them
        return msg
    if kind == "missing" or isinstance(value, dict):
        return f"{key}: {msg}"
    return f"{key}: {msg}, got {value!r} ({type(value).__name__})"


def make_config(data: dict[str, Any], source: str = "settings") -> CascadeConfig:
    """A checked config from plain data (a TOML file merged with command-line flags)."""
    try:
        return CascadeConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors(include_url=False))
        raise ConfigError(f"{source}: {problems}") from None


def read_config_data(path: str | Path) -> dict[str, Any]:
    """The raw TOML table of a config file (checked by :func:`make_config`)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    if not p.is_file():
        raise ConfigError(f"config path is not a file: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{p}: cannot read it as UTF-8 text: {e}") from e
    # paths in a config are relative to the config file (the pair travels together): a task
    # TOML file, and a fitted worker's folder
    task = data.get("task")
    if isinstance(task, str) and task.strip() and not _builtin_task(task):
        where = Path(task).expanduser()
        data["task"] = str(where if where.is_absolute() else p.parent / where)
    for options in (data.get("models") or {}).values():
        if isinstance(options, dict) and isinstance(options.get("directory"), str):
            where = Path(options["directory"]).expanduser()
            options["directory"] = str(where if where.is_absolute() else p.parent / where)
    return data


def _builtin_task(name: str) -> bool:
    from speculabel.tasks.builtin import BUILTIN_TASKS

    return name in BUILTIN_TASKS


def load_config(path: str | Path) -> CascadeConfig:
    return make_config(read_config_data(path), str(path))


def dump_config(cfg: CascadeConfig) -> dict[str, Any]:
    """The TOML table of a config (defaults for the optional tables left out)."""
    out: dict[str, Any] = cfg.model_dump(exclude_none=True)
    for key in ("weights", "calibration", "models", "certificate"):
        if not out.get(key):
            out.pop(key, None)
    if not out.get("judge_only"):
        out.pop("judge_only", None)
    if not out.get("adaptive"):  # the adaptive keys mean nothing without it
        for key in ("adaptive", "target", "delta", "scope", "audit_rate", "warmup",
                    "recertify_every", "seed", "adaptive_method", "fit"):
            out.pop(key, None)
    for entry in out.get("calibration", {}).values():
        if not entry.get("offsets"):
            entry.pop("offsets", None)
    return out


def save_config(cfg: CascadeConfig, path: str | Path, comment: str = "") -> Path:
    """Write ``cfg`` as a cascade.toml, ``comment`` lines on top."""
    import tomli_w

    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    table = dump_config(cfg)
    task = table.get("task")
    if isinstance(task, str) and not _builtin_task(task) and Path(task).is_absolute():
        # a task file is written relative to the config (read back relative to it)
        table["task"] = os.path.relpath(task, p.parent.resolve())
    for options in (table.get("models") or {}).values():  # folders beside the file: relative
        where = options.get("directory")
        if isinstance(where, str) and Path(where).is_absolute():
            with contextlib.suppress(ValueError):  # elsewhere: stays absolute
                options["directory"] = str(Path(where).relative_to(p.parent.resolve()))
    p.write_text(head + tomli_w.dumps(table), encoding="utf-8")
    return p
