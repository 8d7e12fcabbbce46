"""Encoder registry: named encoders and spec-string backends behind one `create_encoder`.

Two kinds of entries:
  * backends, keyed by a prefix: `st:ID_OR_PATH`, `hf:ID_OR_PATH`, `timm:NAME`, `onnx:PATH` ...
    The factory receives the part after the colon and the options (`?key=value&...`).
  * named encoders: `effnet-lite0`, `minilm-l6` ... (offline defaults shipped in Python packages).

    register_backend("st", factory)      create_encoder("st:/models/minilm?max_tokens=128")
    register_encoder("effnet-lite0", f)  list_encoders("effnet*")
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from modalign.encoders.base import Encoder
from modalign.errors import ConfigError
from modalign.utils.registry import Registry

logger = logging.getLogger(__name__)

EncoderFactory = Callable[..., Encoder]
# backends whose target may be a Hugging Face Hub id (downloaded unless it is a local path or has ?weights=)
HUB_BACKENDS = ("st", "hf", "hf-audio", "timm")


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    factory: EncoderFactory
    modality: str  # "image" | "text" | "audio" | "any" (a backend that serves several)
    description: str
    requires: str  # the pip extra / packages it needs, shown in errors and in `modalign encoders`


# the built-in backend modules register themselves (and import heavy libraries lazily) on first lookup
BACKENDS: Registry[RegistryEntry] = Registry("encoder backend", plugins=["modalign.encoders.builtin"])
NAMED: Registry[RegistryEntry] = Registry("encoder", plugins=["modalign.encoders.builtin"])


def register_backend(prefix: str, factory: EncoderFactory, *, modality: str = "any",
                     description: str = "", requires: str = "") -> None:
    BACKENDS.register(prefix, RegistryEntry(prefix, factory, modality, description, requires), description=description)


def register_encoder(name: str, factory: EncoderFactory, *, modality: str,
                     description: str = "", requires: str = "") -> None:
    NAMED.register(name, RegistryEntry(name, factory, modality, description, requires), description=description)


def parse_spec(spec: str) -> tuple[str | None, str, dict[str, str]]:
    """'st:/a/b?max_tokens=64' -> ('st', '/a/b', {'max_tokens': '64'}); 'effnet-lite0' -> (None, 'effnet-lite0', {})."""
    body, _, query = spec.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    prefix, sep, target = body.partition(":")
    # a Windows drive letter ("C:\\...") is not a backend prefix
    if sep and prefix in BACKENDS:
        return prefix, target, options
    if sep and len(prefix) > 1 and "/" not in prefix:
        return prefix, target, options
    return None, body, options


def create_encoder(spec: str, device: str = "cpu") -> Encoder:
    """Builds an encoder from a spec string; errors name the known encoders and the missing extra."""
    prefix, target, options = parse_spec(spec)
    if prefix is None:
        if target not in NAMED:
            raise ConfigError(
                f"unknown encoder {spec!r}; known names: {', '.join(NAMED.list())}; "
                f"or use a backend spec: {', '.join(p + ':...' for p in BACKENDS.list())}"
            )
        entry = NAMED.get(target)
        args: tuple[str, ...] = ()
    else:
        entry = BACKENDS.get(prefix)  # unknown prefixes raise with the known backends
        if not target:
            raise ConfigError(f"encoder spec {spec!r} names no model after '{prefix}:'")
        args = (target,)
    offline = _hub_unreachable(prefix, target, options)
    try:
        encoder = entry.factory(*args, **options)
    except (OSError, ConfigError) as e:
        if offline and (isinstance(e, OSError) or isinstance(e.__cause__, OSError)):
            raise ConfigError(
                f"encoder {spec!r}: {target!r} is not in the local Hugging Face cache and the Hub cannot be asked "
                f"({offline}). Download it once with network access, or pass a local model folder "
                f"({prefix}:/path/to/model)") from None
        raise
    except ImportError as e:
        raise ConfigError(
            f"encoder {spec!r} needs {entry.requires or 'an optional dependency'}: {e}. "
            f"Install it, e.g. pip install 'modalign[all]'"
        ) from e
    except TypeError as e:
        raise ConfigError(f"bad options for encoder {spec!r}: {e}") from e
    encoder.spec = spec
    return encoder.to(device)


def _hub_unreachable(prefix: str | None, target: str, options: dict[str, str]) -> str | None:
    """Why a hub id cannot be downloaded (offline), or None (not a hub id, or the Hub answers): said once."""
    from modalign.encoders.common import is_local_path
    from modalign.utils.hub import hub_unreachable

    local = is_local_path(target) or target.startswith("local-dir:") or "weights" in options
    if prefix not in HUB_BACKENDS or local or options.get("pretrained", "true").lower() in ("false", "0", "no"):
        return None
    return hub_unreachable()


def list_encoders(pattern: str | None = None, modality: str | None = None) -> list[RegistryEntry]:
    """Named encoders, then backends (listed as 'prefix:'), whose name matches `pattern`: a glob
    ("effnet*") or a plain substring ("effnet"); `modality` keeps those serving it."""
    backends = [BACKENDS.get(p) for p in BACKENDS.list(pattern.rstrip(":") if pattern else None)]
    entries = [NAMED.get(n) for n in NAMED.list(pattern)]
    entries += [RegistryEntry(e.name + ":", e.factory, e.modality, e.description, e.requires) for e in backends]
    return [e for e in entries if modality is None or e.modality in (modality, "any")]
