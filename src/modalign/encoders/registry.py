"""Encoder registry: named encoders and spec-string backends behind one `create_encoder`.

Two kinds of entries:
  * backends, keyed by a prefix: `st:ID_OR_PATH`, `hf:ID_OR_PATH`, `timm:NAME`, `onnx:PATH` ...
    The factory receives the part after the colon and the options (`?key=value&...`).
  * named encoders: `effnet-lite0`, `minilm-l6` ... (offline defaults shipped in Python packages).

    register_backend("st", factory)      create_encoder("st:/models/minilm?max_tokens=128")
    register_encoder("effnet-lite0", f)  list_encoders("effnet*")
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from modalign.encoders.base import Encoder
from modalign.errors import ConfigError

logger = logging.getLogger(__name__)

EncoderFactory = Callable[..., Encoder]


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    factory: EncoderFactory
    modality: str  # "image" | "text" | "audio" | "any" (a backend that serves several)
    description: str
    requires: str  # the pip extra / packages it needs, shown in errors and in `modalign encoders`


_BACKENDS: dict[str, RegistryEntry] = {}
_NAMED: dict[str, RegistryEntry] = {}
_BUILTINS_LOADED = False


def _register(table: dict[str, RegistryEntry], entry: RegistryEntry) -> None:
    if entry.name in table:
        logger.warning("encoder %r registered twice; the later registration wins", entry.name)
    table[entry.name] = entry


def register_backend(prefix: str, factory: EncoderFactory, *, modality: str = "any",
                     description: str = "", requires: str = "") -> None:
    _register(_BACKENDS, RegistryEntry(prefix, factory, modality, description, requires))


def register_encoder(name: str, factory: EncoderFactory, *, modality: str,
                     description: str = "", requires: str = "") -> None:
    _register(_NAMED, RegistryEntry(name, factory, modality, description, requires))


def _load_builtins() -> None:
    """Imports the built-in backends once; each module registers itself (and imports heavy deps lazily)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from modalign.encoders import builtin  # noqa: F401


def parse_spec(spec: str) -> tuple[str | None, str, dict[str, str]]:
    """'st:/a/b?max_tokens=64' -> ('st', '/a/b', {'max_tokens': '64'}); 'effnet-lite0' -> (None, 'effnet-lite0', {})."""
    body, _, query = spec.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    prefix, sep, target = body.partition(":")
    # a Windows drive letter ("C:\\...") is not a backend prefix
    if sep and prefix in _BACKENDS:
        return prefix, target, options
    if sep and len(prefix) > 1 and "/" not in prefix:
        return prefix, target, options
    return None, body, options


def create_encoder(spec: str, device: str = "cpu") -> Encoder:
    """Builds an encoder from a spec string; errors name the known encoders and the missing extra."""
    _load_builtins()
    prefix, target, options = parse_spec(spec)
    if prefix is None:
        entry = _NAMED.get(target)
        if entry is None:
            raise ConfigError(
                f"unknown encoder {spec!r}; known names: {', '.join(sorted(_NAMED))}; "
                f"or use a backend spec: {', '.join(p + ':...' for p in sorted(_BACKENDS))}"
            )
        args: tuple = ()
    else:
        entry = _BACKENDS.get(prefix)
        if entry is None:
            raise ConfigError(
                f"unknown encoder backend {prefix!r} in {spec!r}; known backends: "
                f"{', '.join(sorted(_BACKENDS))}"
            )
        if not target:
            raise ConfigError(f"encoder spec {spec!r} names no model after '{prefix}:'")
        args = (target,)
    try:
        encoder = entry.factory(*args, **options)
    except ImportError as e:
        raise ConfigError(
            f"encoder {spec!r} needs {entry.requires or 'an optional dependency'}: {e}. "
            f"Install it, e.g. pip install 'modalign[all]'"
        ) from e
    except TypeError as e:
        raise ConfigError(f"bad options for encoder {spec!r}: {e}") from e
    encoder.spec = spec
    return encoder.to(device)


def list_encoders(pattern: str = "*", modality: str | None = None) -> list[RegistryEntry]:
    """Named encoders and backends whose name matches the glob `pattern` (backends listed as 'prefix:')."""
    _load_builtins()
    entries = [*_NAMED.values(), *(RegistryEntry(e.name + ":", e.factory, e.modality, e.description, e.requires)
                                   for e in _BACKENDS.values())]
    return [
        e for e in sorted(entries, key=lambda e: (e.name.endswith(":"), e.name))
        if fnmatch.fnmatch(e.name, pattern) and (modality is None or e.modality in (modality, "any"))
    ]
