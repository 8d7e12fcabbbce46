"""Layer specs: one encoder layer name ("final", "blocks.12") or several read side by side."""

from __future__ import annotations

from modalign.errors import ConfigError

LayerSpec = str | list[str]  # one layer name, or several


def as_layer_list(layer: LayerSpec) -> list[str]:
    """'final' -> ['final']; ['a', 'b'] -> ['a', 'b']; 'a,b' -> ['a', 'b']."""
    names = [p.strip() for p in layer.split(",")] if isinstance(layer, str) else [str(p).strip() for p in layer]
    names = [p for p in names if p]
    if not names:
        raise ConfigError(f"no layer named in {layer!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"layer list {names} names a layer twice")
    return names


def normalize_layer_spec(layer: LayerSpec) -> LayerSpec:
    """A one-element list (or 'a' alone) becomes the plain string form; longer lists stay lists."""
    names = as_layer_list(layer)
    return names[0] if len(names) == 1 else names
