"""Reading Iconify icon sets straight from their npm packages: no node needed, the tarball is read in Python.

Two package shapes, each as an npm tarball (`npm pack NAME`) or an unpacked folder (`npm install NAME`):

    @iconify/json          package/collections.json       {prefix: info} of every set (~240 sets)
                           package/json/<prefix>.json      IconifyJSON: prefix, info, icons, aliases, categories
    @iconify-json/<set>    package/info.json               info of the one set
                           package/icons.json              IconifyJSON without categories
                           package/metadata.json           {"categories": {name: [icon names]}}

`find_sources` lists what a folder holds (tarballs named *.tgz, package folders, node_modules); a
`Source` gives the catalog of its sets ({prefix: info}) and reads chosen sets in one pass over the tarball.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError

logger = logging.getLogger(__name__)

IconSetJSON = dict[str, Any]  # IconifyJSON with "categories" merged in for single-set packages
FULL_PACKAGE = "@iconify/json"


def _member_prefix(name: str) -> str | None:
    """'package/json/mdi.json' -> 'mdi' (the full package's set files)."""
    parts = name.split("/")
    if len(parts) == 3 and parts[1] == "json" and parts[2].endswith(".json"):
        return parts[2][:-5]
    return None


@dataclass(frozen=True)
class Source:
    path: Path  # a .tgz file or a package folder (the one holding package.json)
    full: bool  # True: @iconify/json (many sets); False: one @iconify-json/<set>

    def _files(self, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
        """(path inside the package, bytes) of the wanted relative paths ("collections.json", "json/mdi.json")."""
        if self.path.is_dir():
            for rel in sorted(wanted):
                if (self.path / rel).is_file():
                    yield rel, (self.path / rel).read_bytes()
            return
        left = set(wanted)
        try:
            with tarfile.open(self.path, "r|gz") as tar:  # one streaming pass: no seeks in a 100 MB gzip
                for member in tar:
                    rel = member.name.split("/", 1)[-1]
                    if member.isfile() and rel in left:
                        f = tar.extractfile(member)
                        if f is not None:
                            yield rel, f.read()
                        left.discard(rel)
                        if not left:
                            return
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ConfigError(f"cannot read the npm tarball {self.path}: {e}; download it again with `npm pack`") from e

    def _json(self, rel: str) -> Any:
        for _, data in self._files({rel}):
            return json.loads(data)
        raise ConfigError(f"{self.path} has no {rel}: is it an Iconify package?")

    def catalog(self) -> dict[str, dict[str, Any]]:
        """{prefix: info} of the sets in this package."""
        if self.full:
            return dict(self._json("collections.json"))
        info = self._json("info.json")
        return {str(info["prefix"]): info}

    def read_sets(self, prefixes: set[str]) -> Iterator[IconSetJSON]:
        """The IconifyJSON of each wanted set this package holds, with "categories" when known."""
        if self.full:
            for _, data in self._files({f"json/{p}.json" for p in prefixes}):
                yield json.loads(data)
            return
        files = dict(self._files({"icons.json", "info.json", "metadata.json"}))
        icons = json.loads(files["icons.json"])
        if icons.get("prefix") not in prefixes:
            return
        icons.setdefault("info", json.loads(files.get("info.json", b"{}")))
        icons.setdefault("categories", json.loads(files.get("metadata.json", b"{}")).get("categories", {}))
        yield icons


def _package_name(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / "package.json").read_text(encoding="utf-8")).get("name"))
    except (OSError, ValueError):
        return None


def _tarball_kind(path: Path) -> bool | None:
    """True for an @iconify/json tarball, False for @iconify-json/<set>, None for anything else (by name)."""
    name = path.name
    if not name.endswith(".tgz") or not name.startswith("iconify-json-"):
        return None
    rest = name[len("iconify-json-"):-4]
    return rest[:1].isdigit()  # "iconify-json-2.2.535.tgz" vs "iconify-json-mdi-1.2.3.tgz"


def _package_folder(folder: Path) -> Source | None:
    name = _package_name(folder)
    if name == FULL_PACKAGE and (folder / "json").is_dir():
        return Source(folder, True)
    if name and name.startswith("@iconify-json/") and (folder / "icons.json").is_file():
        return Source(folder, False)
    return None


def find_sources(root: Path) -> list[Source]:
    """The Iconify packages `root` is or holds: a tarball, a package folder, or a folder of tarballs and
    node_modules. Single-set packages come first, so that they win over the same set in the full package."""
    if root.is_file():
        kind = _tarball_kind(root)
        if kind is None and root.suffix != ".tgz":
            raise ConfigError(f"{root} is not an npm tarball (.tgz) of @iconify/json or @iconify-json/<set>")
        return [Source(root, kind if kind is not None else _looks_full(root))]
    if not root.is_dir():
        return []
    single = _package_folder(root)
    if single is not None:
        return [single]
    found = [Source(p, kind) for p in sorted(root.glob("*.tgz")) if (kind := _tarball_kind(p)) is not None]
    for modules in (root / "node_modules", root):
        for folder in [modules / "@iconify" / "json", *sorted((modules / "@iconify-json").glob("*"))]:
            source = _package_folder(folder) if folder.is_dir() else None
            if source is not None:
                found.append(source)
    return sorted(found, key=lambda s: s.full)


def _looks_full(path: Path) -> bool:
    try:
        with tarfile.open(path, "r|gz") as tar:
            return any(m.name.endswith("collections.json") for m in tar)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ConfigError(f"cannot read the npm tarball {path}: {e}") from e
