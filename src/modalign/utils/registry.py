"""The one registry mechanism: name -> entry, behind every `register_*` / `create_*` / `list_*` of modalign.

    LOSSES = Registry[LossFactory]("loss", plugins=["modalign.align.symile"])

    @LOSSES.register("infonce", description="symmetric InfoNCE")
    class InfoNCE: ...

    LOSSES.get("infonce")            # the entry; unknown names raise ConfigError listing the known ones
    LOSSES.list("info*")             # sorted names matching a glob or a plain substring
    LOSSES.descriptions()            # {name: one-line description}

`plugins` are modules imported on first lookup, so a module that only registers entries (an optional
loss, a data set loader) is found without the registry's own module importing it at import time.
Registering a name twice keeps the later entry and warns once, as timm's and open_clip's registries do.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from modalign.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plugins: Sequence[str] = ()):
        self.kind = kind  # what an entry is, for messages: "loss", "index kind" ...
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._plugins = list(plugins)

    def register(self, name: str, entry: T | None = None, *, description: str = "") -> Callable[[T], T]:
        """`registry.register(name, entry)` or as a decorator `@registry.register(name)`."""

        def add(obj: T) -> T:
            if name in self._entries:
                logger.warning("%s %r registered twice; the later registration wins", self.kind, name)
            self._entries[name] = obj
            own_doc = (obj.__doc__ or "") if callable(obj) else ""  # a factory's docstring, not a value's type's
            doc = description or own_doc.strip().split("\n")[0]
            self._descriptions[name] = doc
            return obj

        if entry is not None:
            add(entry)
        return add

    def remove(self, name: str) -> None:
        """Drops an entry (tests and plugins that register something temporary)."""
        self._entries.pop(name, None)
        self._descriptions.pop(name, None)

    def _load_plugins(self) -> None:
        while self._plugins:
            importlib.import_module(self._plugins.pop(0))

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.list()) or '(none)'}")
        return self._entries[name]

    def list(self, pattern: str | None = None) -> list[str]:
        """Sorted names; `pattern` is a glob ("text*") or, without glob characters, a substring ("effnet")."""
        self._load_plugins()
        names = sorted(self._entries)
        if not pattern:
            return names
        if not any(c in pattern for c in "*?["):
            return [n for n in names if pattern.lower() in n.lower()]
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]

    def descriptions(self, pattern: str | None = None) -> dict[str, str]:
        return {name: self._descriptions[name] for name in self.list(pattern)}

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
