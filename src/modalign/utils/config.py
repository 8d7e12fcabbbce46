"""The one path from plain dicts (TOML recipes, saved JSON, command-line flags) to typed configs.

    cfg = load_config(FitConfig, {"method": "cca", "train": {"epochs": 20}})
    cfg = load_config(ExtendConfig, flags)                 # nested defaults come from ExtendConfig itself
    cfg = load_config(FitConfig, override, base=recipe)    # layers: recipe, then --config, then flags

Every config is a dataclass whose defaults are written once, on its own fields. A nested config
(`train`, `projector`) starts from the PARENT's default for that field, so `ExtendConfig().train`
(200 epochs) is what an extend run gets unless a key overrides it. Unknown keys are an error that
lists the known ones; a value of the wrong kind (text for a number, a table for a number) too.
A table-valued field replaces its default as a whole, unless the field is declared with
`field(..., metadata=MERGE)`: per-modality settings (`encoders`) then merge key by key, so
`{"encoders": {"image": "timm:vit"}}` keeps the default text encoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from modalign.errors import ConfigError

T = TypeVar("T")

MERGE = {"merge": True}  # field metadata: a table given for this field merges into the default key by key


def load_config(cls: type[T], overrides: Mapping[str, Any] | None = None, *, base: T | None = None,
                what: str | None = None) -> T:
    """`base` (default: `cls()`) with `overrides` laid over it, nested tables merged field by field."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass config")
    start = base if base is not None else cls()
    name = what or cls.__name__.removesuffix("Config").lower() or "config"
    return _apply(start, dict(overrides or {}), name)


def config_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON-ready data (nested configs as tables)."""
    return dataclasses.asdict(cfg)


def merge_dicts(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override` laid over it; nested tables merge key by key, other values replace."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def _apply(obj: Any, overrides: dict[str, Any], path: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(f"unknown {path} option(s) {sorted(unknown)}; known: {sorted(fields)}")
    changes = {}
    for key, value in overrides.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}.{key} must be a table of options, got {value!r}")
            changes[key] = _apply(current, dict(value), f"{path}.{key}")
        else:
            value = _checked(current, value, f"{path}.{key}")
            merge = fields[key].metadata.get("merge") and isinstance(current, Mapping)
            changes[key] = {**current, **value} if merge else value
    return dataclasses.replace(obj, **changes)


def _checked(current: Any, value: Any, where: str) -> Any:
    """`value` for a field whose default is `current`: numbers stay numbers, flags stay flags."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(current, int | float) and not isinstance(value, bool) and isinstance(value, int | float):
        if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where} must be a whole number, got {value!r}")
            return int(value)
        return value
    if isinstance(current, int | float) or isinstance(value, int | float) and isinstance(current, str):
        raise ConfigError(f"{where} must be like {current!r}, got {value!r}")
    if isinstance(current, Mapping) and not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table, got {value!r}")
    return value
