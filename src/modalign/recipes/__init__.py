"""Named training recipes: TOML files with FitConfig settings, shipped with the package.

    cfg = FitConfig.from_dict(load_recipe("structure"))      # or a path: load_recipe("my.toml")
    list_recipes()                                           # {"default": "...", "freeze-align": "...", ...}
    recipe_info("sail")                                      # description, source, notes

A recipe file holds FitConfig's keys (top-level keys, [encoders], [layers], [train],
[train.projector], [train.loss_options]) plus a [recipe] table describing where the settings come from;
load_recipe drops that table so the result goes straight into FitConfig.from_dict. Paper recipes name
the papers' encoders as hub specs: they need the Hub (or local copies) and, at their batch sizes, a GPU.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError

META_TABLE = "recipe"


def _packaged() -> dict[str, Any]:
    """name -> Traversable of every shipped recipe file."""
    root = resources.files("modalign.recipes")
    return {p.name[: -len(".toml")]: p for p in root.iterdir() if p.name.endswith(".toml")}


def _read(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    packaged = _packaged()
    if str(name_or_path) in packaged:
        text = packaged[str(name_or_path)].read_text(encoding="utf-8")
        where = f"recipe {name_or_path!r}"
    elif path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} not found")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        raise ConfigError(f"unknown recipe {str(name_or_path)!r}; known: {', '.join(sorted(packaged))} "
                          "(or give a path to a .toml file)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from e


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """A shipped recipe by name, or a TOML file by path -> dict for FitConfig.from_dict (no [recipe] table)."""
    raw = _read(name_or_path)
    raw.pop(META_TABLE, None)
    return raw


def recipe_info(name_or_path: str | Path) -> dict[str, Any]:
    """The recipe's [recipe] table: description, source, notes (empty when it has none)."""
    return dict(_read(name_or_path).get(META_TABLE, {}))


def list_recipes() -> dict[str, str]:
    """name -> one-line description of every shipped recipe."""
    return {name: recipe_info(name).get("description", "") for name in sorted(_packaged())}
