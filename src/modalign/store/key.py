"""The cache key: everything that changes the stored vectors, hashed into the entry's folder name."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from modalign.errors import ConfigError
from modalign.utils.hashing import hash_json, stable_json

if TYPE_CHECKING:
    from modalign.data.column import Column
    from modalign.encoders.base import Encoder

FORMAT_VERSION = 2  # bump when the on-disk layout changes: old entries then get new folders (2: item_hashes.npy)
DIGEST_LENGTH = 24  # hex characters of the folder name
STORAGE_DTYPES = ("float32", "float16")

StorageDtype = Literal["float32", "float16"]


@dataclass(frozen=True)
class CacheKey:
    """Two encodings with equal keys give the same vectors; anything that could change them is a field."""

    encoder: str  # spec string the encoder was created from, e.g. "effnet-lite0"
    weights: str  # encoder.fingerprint(): hash of the weights
    layer: str  # resolved layer name, e.g. "final", "blocks.3"
    pooling: str  # how the layer's tokens/positions become one vector ("mean", "cls" ...)
    preprocessing: dict[str, Any] = field(hash=False)  # encoder.preprocessing(), JSON-normalised
    dtype: str  # storage dtype: "float32" | "float16"
    data: str  # column.content_hash(): ids + item bytes
    modality: str  # "image" | "text" | "audio" ...
    n_items: int  # rows in the column (skipped items included)
    format_version: int = FORMAT_VERSION  # on-disk layout version

    @classmethod
    def for_column(cls, column: Column, encoder: Encoder, layer: str, dtype: str = "float32") -> CacheKey:
        """The key of `column` encoded by `encoder` at `layer` (an already resolved layer name)."""
        check_dtype(dtype)
        return cls(
            encoder=encoder.spec,
            weights=encoder.fingerprint(),
            layer=layer,
            pooling=encoder.layer_info(layer).pooling,
            # tuples become lists, as they will be after a round trip through manifest.json
            preprocessing=json.loads(stable_json(encoder.preprocessing())),
            dtype=dtype,
            data=column.content_hash(),
            modality=column.modality,
            n_items=len(column),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheKey:
        """Raises KeyError / TypeError when fields are missing or unknown (a damaged manifest)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TypeError(f"unknown cache key fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def digest(self) -> str:
        """Stable hash of every field: the entry's folder name."""
        return hash_json(self.to_dict(), length=DIGEST_LENGTH)

    def describe(self) -> str:
        """One line for logs: 'effnet-lite0 [final] float32, 12 image items'."""
        return f"{self.encoder} [{self.layer}] {self.dtype}, {self.n_items} {self.modality} items"


def key_differences(stored: dict[str, Any], expected: CacheKey) -> list[str]:
    """Human-readable differences between a stored key (as read from JSON) and the expected one."""
    want = json.loads(stable_json(expected.to_dict()))
    have = json.loads(stable_json(stored))
    out = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            out.append(f"{name}: missing in the stored key (expected {want[name]!r})")
        elif name not in want:
            out.append(f"{name}: unexpected field in the stored key ({have[name]!r})")
        elif have[name] != want[name]:
            out.append(f"{name}: stored {_short(have[name])}, expected {_short(want[name])}")
    return out


def check_dtype(dtype: str) -> None:
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"unknown storage dtype {dtype!r}; use one of: {', '.join(STORAGE_DTYPES)}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
