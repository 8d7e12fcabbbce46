"""Typed configs from plain dicts (TOML recipes, saved JSON): unknown keys are an error, not ignored."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from modalign.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], d: dict[str, Any], what: str, **nested: Any) -> T:
    """cls(**d, **nested) after checking that every key of `d` is a field of the dataclass `cls`.

    `nested` holds sub-configs already built from their own tables (e.g. train=TrainConfig(...)).
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**{**d, **nested})
