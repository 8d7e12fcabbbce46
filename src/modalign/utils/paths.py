"""Where modalign keeps things on disk, read from the environment in one place.

    $MODALIGN_CACHE   the cache home (default ~/.cache/modalign): unpacked packaged models, rendered data,
                      exported graphs; $MODALIGN_HOME is read as an older name for it
    $MODALIGN_STORE   the default embedding store (default: <cache home>/store)

Every path a user gives goes through `user_path`, so "~/runs" means the home folder, never a folder named "~".
"""

from __future__ import annotations

import os
from pathlib import Path


def user_path(path: str | os.PathLike[str]) -> Path:
    """A path as a user wrote it: "~" and "~user" expanded."""
    return Path(path).expanduser()


def cache_home() -> Path:
    env = os.environ.get("MODALIGN_CACHE") or os.environ.get("MODALIGN_HOME")
    return user_path(env) if env else Path.home() / ".cache" / "modalign"


def cache_dir(*parts: str) -> Path:
    """A folder under the cache home (not created)."""
    return cache_home().joinpath(*parts)


def default_store() -> Path:
    env = os.environ.get("MODALIGN_STORE")
    return user_path(env) if env else cache_dir("store")
