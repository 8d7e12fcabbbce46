"""An entry's manifest.json: the full cache key, the shard layout, and whether every shard is done.

An entry folder (its name is the key digest) holds:

    manifest.json   key, dim, layout, complete, counts, provenance   (written first, and again at the end)
    ids.json        the item ids, row order
    shard-*.json / shard-*.npy                                        (see shards.py)
    valid.npy       (n,) bool  }  gathered from the sidecars once every shard is done,
    skipped.json    {id: reason} }  just before the manifest is rewritten with complete: true

Every file is written atomically. The stored key is compared with the expected one on every open:
a manifest that disagrees is never reused silently, it raises MismatchError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalign.errors import MismatchError
from modalign.store.key import CacheKey, key_differences
from modalign.store.shards import ShardLayout
from modalign.utils.io import atomic_write, atomic_write_json, npy_bytes, read_json

MANIFEST = "manifest.json"
IDS = "ids.json"
VALID = "valid.npy"
SKIPPED = "skipped.json"


@dataclass
class Manifest:
    key: CacheKey
    dim: int  # vector width at key.layer
    layout: ShardLayout
    complete: bool = False  # true once every shard is written and valid.npy / skipped.json exist
    n_encoded: int = 0  # counts, filled in when complete
    n_skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # skip reason category -> count
    created: str = ""  # ISO time the entry was started
    completed: str = ""  # ISO time it was completed
    info: dict[str, Any] = field(default_factory=dict)  # provenance, not part of the key (device, versions)
    checksums: list[str] | None = None  # per shard, of its vectors' bytes (filled in when complete); None in
    #                                     entries written before checksums (then only finiteness is checked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.key.digest(),
            "key": self.key.to_dict(),
            "dim": self.dim,
            "layout": self.layout.to_dict(),
            "complete": self.complete,
            "n_encoded": self.n_encoded,
            "n_skipped": self.n_skipped,
            "reasons": self.reasons,
            "created": self.created,
            "completed": self.completed,
            "info": self.info,
            "checksums": self.checksums,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(
            key=CacheKey.from_dict(d["key"]),
            dim=int(d["dim"]),
            layout=ShardLayout(**d["layout"]),
            complete=bool(d["complete"]),
            n_encoded=int(d.get("n_encoded", 0)),
            n_skipped=int(d.get("n_skipped", 0)),
            reasons=dict(d.get("reasons", {})),
            created=str(d.get("created", "")),
            completed=str(d.get("completed", "")),
            info=dict(d.get("info", {})),
            checksums=_checksums(d.get("checksums"), ShardLayout(**d["layout"]).n_shards),
        )


def _checksums(value: Any, n_shards: int) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n_shards or not all(isinstance(v, str) for v in value):
        raise ValueError(f"checksums must be a list of {n_shards} strings, one per shard")
    return list(value)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    atomic_write_json(folder / MANIFEST, manifest.to_dict())


def read_manifest(folder: Path, expected: CacheKey | None = None) -> Manifest | None:
    """The manifest in `folder`, checked against `expected` and the folder name; None when there is none.

    Raises MismatchError when the stored key differs from the expected one, when it does not hash to
    the folder name (an edited manifest), or when the manifest cannot be read.
    """
    path = folder / MANIFEST
    if not path.exists():
        return None
    fix = f"delete the folder ({path.parent}) and encode again"
    try:
        raw = read_json(path)
        stored_key = raw["key"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise MismatchError(f"store manifest {path} is unreadable ({type(e).__name__}: {e}); {fix}") from e
    if expected is not None:
        diffs = key_differences(stored_key, expected)
        if diffs:
            raise MismatchError(
                f"store entry {folder} holds embeddings for a different cache key than the one asked for "
                f"({'; '.join(diffs)}). The folder is named after the key's digest, so its manifest was edited "
                f"or copied from elsewhere; it is not reused: {fix}"
            )
    try:
        manifest = Manifest.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise MismatchError(f"store manifest {path} is malformed ({type(e).__name__}: {e}); {fix}") from e
    if manifest.key.digest() != folder.name:
        raise MismatchError(
            f"store manifest {path} holds a key whose digest ({manifest.key.digest()}) is not its folder name "
            f"({folder.name}): the manifest was edited or moved; it is not reused: {fix}"
        )
    return manifest


def write_ids(folder: Path, ids: list[str]) -> None:
    atomic_write_json(folder / IDS, ids)


def read_ids(folder: Path) -> list[str]:
    return list(read_json(folder / IDS))


def write_summary(folder: Path, valid: np.ndarray, skipped: dict[str, str]) -> None:
    """valid.npy (n,) bool and skipped.json, gathered from the shard sidecars."""
    atomic_write(folder / VALID, lambda f: f.write(npy_bytes(valid.astype(bool))))
    atomic_write_json(folder / SKIPPED, skipped)


def read_summary(folder: Path) -> tuple[np.ndarray, dict[str, str]]:
    return np.load(folder / VALID, allow_pickle=False), dict(read_json(folder / SKIPPED))
