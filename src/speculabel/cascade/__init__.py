"""The cascade: workers vote, a rule decides, the judge labels the rest; built from settings."""

from speculabel.cascade.build import build_cascade, check_setup, load_backends
from speculabel.cascade.config import (
    DEFAULT_JUDGE,
    DEFAULT_WORKERS,
    TASK_DEFAULT_WORKERS,
    CascadeConfig,
    ConfigError,
    default_workers,
    load_config,
    make_config,
)
from speculabel.cascade.run import Cascade, CascadeStats

__all__ = [
    "DEFAULT_JUDGE",
    "DEFAULT_WORKERS",
    "TASK_DEFAULT_WORKERS",
    "Cascade",
    "CascadeConfig",
    "CascadeStats",
    "ConfigError",
    "build_cascade",
    "check_setup",
    "default_workers",
    "load_backends",
    "load_config",
    "make_config",
]
