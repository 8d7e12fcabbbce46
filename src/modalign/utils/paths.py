"""Where modalign keeps derived files (unpacked models, rendered sprites, extracted tars)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$MODALIGN_CACHE, or ~/.cache/modalign."""
    env = os.environ.get("MODALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modalign"


def cache_dir(*parts: str) -> Path:
    """A folder under the cache root, e.g. cache_dir("cdda") -> ~/.cache/modalign/cdda (not created)."""
    return cache_root().joinpath(*parts)
