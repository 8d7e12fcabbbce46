"""Cataclysm: DDA item and monster definitions (Debian package cataclysm-dda-data): names, descriptions,
categories.

    /usr/share/games/cataclysm-dda/json/items/**.json      objects of type GENERIC, TOOL, ARMOR, COMESTIBLE ...
    /usr/share/games/cataclysm-dda/json/monsters/**.json   objects of type MONSTER

An object may inherit fields from another with "copy-from" (abstract parents carry "abstract" instead of
"id"); only the fields read here (name, description, category, comestible_type, melee damage) are resolved.
Each defined thing becomes one `Thing`: its caption is "name: description" ("yogurt: Delicious fermented
dairy. It tastes of vanilla."), its category the game's item category ("food", "guns" ...) or "monster".
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.data.skips import SkipCounter

logger = logging.getLogger(__name__)

# the game's default category for an item without an explicit one (after src/item_factory.cpp calc_category)
TYPE_CATEGORY = {"GUN": "guns", "MAGAZINE": "magazines", "AMMO": "ammo", "TOOL": "tools", "TOOL_ARMOR": "tools",
                 "ARMOR": "clothing", "PET_ARMOR": "clothing", "BOOK": "books", "GUNMOD": "mods", "TOOLMOD": "mods",
                 "BIONIC_ITEM": "bionics", "ENGINE": "veh_parts", "WHEEL": "veh_parts", "BATTERY": "tools"}
ITEM_TYPES = frozenset(TYPE_CATEGORY) | {"GENERIC", "COMESTIBLE"}
MONSTER = "monster"
# readable class names for zero-shot prompts ("a photo of {}")
CATEGORY_NAMES = {"ammo": "ammunition", "mods": "gun mods", "veh_parts": "vehicle parts", "chems": "chemicals",
                  "spare_parts": "spare parts", "container": "containers", "drugs": "drugs and medicine"}
_FIELDS = ("name", "description", "category", "comestible_type", "bashing", "cutting", "melee_damage")
_TAG = re.compile(r"</?[a-zA-Z_]+>")  # colour tags in descriptions: <color_red>, </color>, <good>


@dataclass(frozen=True)
class Thing:
    id: str  # the game id ("yogurt", "mon_zombie"); sprites are looked up by it
    kind: str  # "item" | "monster"
    name: str
    description: str
    category: str  # item category id ("food", "guns" ...) or "monster"

    @property
    def key(self) -> str:
        """The group name: unique across items and monsters ("item/yogurt", "monster/mon_zombie")."""
        return f"{self.kind}/{self.id}"

    @property
    def caption(self) -> str:
        return f"{self.name}: {self.description}"


def _text(value: Any) -> str:
    """A name or description: a string or {"str": ...}; tags and repeated spaces removed."""
    if isinstance(value, dict):
        value = value.get("str", value.get("str_sp", ""))
    if not isinstance(value, str):
        return ""
    return " ".join(_TAG.sub("", value).split())


def _read_objects(root: Path, folders: tuple[str, ...], skips: SkipCounter) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.json")):
            if "obsolete" in path.name:  # kept by the game for old saves only
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                skips.add("unreadable json file", f"{path.name}: {e}")
                continue
            objects.extend(o for o in (data if isinstance(data, list) else [data]) if isinstance(o, dict))
    return objects


def _ids(obj: dict[str, Any]) -> list[str]:
    raw = obj.get("id", obj.get("abstract"))
    raw = raw if isinstance(raw, list) else [raw]
    return [i for i in raw if isinstance(i, str) and i]


def _resolve(obj: dict[str, Any], by_id: dict[str, dict[str, Any]], depth: int = 0) -> dict[str, Any]:
    """The fields of `_FIELDS` after following "copy-from" (the object's own values win)."""
    parent_id = obj.get("copy-from")
    parent = by_id.get(parent_id) if isinstance(parent_id, str) else None
    base = _resolve(parent, by_id, depth + 1) if parent is not None and parent is not obj and depth < 20 else {}
    return {**base, **{k: obj[k] for k in _FIELDS if k in obj}}


def _category(obj_type: str, fields: dict[str, Any]) -> str:
    if obj_type == "MONSTER":
        return MONSTER
    if isinstance(fields.get("category"), str):
        return fields["category"].lower()
    if obj_type == "COMESTIBLE":
        return "drugs" if fields.get("comestible_type") == "MED" else "food"
    if obj_type in TYPE_CATEGORY:
        return TYPE_CATEGORY[obj_type]
    melee = fields.get("melee_damage")
    damage = [fields.get("bashing", 0), fields.get("cutting", 0)]
    if isinstance(melee, dict):
        damage += list(melee.values())
    return "weapons" if max((d for d in damage if isinstance(d, int | float)), default=0) > 7 else "other"


def read_things(root: Path, skips: SkipCounter | None = None) -> dict[str, Thing]:
    """Every concrete item and monster with a name and a description, by game id (first definition wins)."""
    skips = skips if skips is not None else SkipCounter("definitions")
    objects = _read_objects(root, ("items", "monsters"), skips)
    by_id: dict[str, dict[str, Any]] = {}
    for obj in objects:
        for i in _ids(obj):
            by_id.setdefault(i, obj)
    things: dict[str, Thing] = {}
    for obj in objects:
        obj_type = obj.get("type")
        if "abstract" in obj or (obj_type not in ITEM_TYPES and obj_type != "MONSTER"):
            continue
        fields = _resolve(obj, by_id)
        name, description = _text(fields.get("name")), _text(fields.get("description"))
        for thing_id in _ids(obj):
            if not name or not description:
                skips.add("no name" if not name else "no description", thing_id)
            elif thing_id in things:
                skips.add("defined twice", thing_id)
            else:
                kind = "monster" if obj_type == "MONSTER" else "item"
                things[thing_id] = Thing(thing_id, kind, name, description, _category(obj_type, fields))
    return things


def category_name(category: str) -> str:
    """'veh_parts' -> 'vehicle parts'; other ids with '_' -> ' '."""
    return CATEGORY_NAMES.get(category, category.replace("_", " "))
