"""SearchIndex: a self-describing folder of vectors + item metadata, searched by an aligned model's queries.

    INDEX/
      index.json      format, model path + config hash, embed dim, modality, kind, params, counts
      vectors.faiss   the FAISS index (ids = the vid column of items.sqlite)
      items.sqlite    one row per vector: key, modality, path, caption, tower, added time

Every vector is L2-normalised, so scores are cosine similarities. Deletes remove vectors where the
kind allows it (flat, IVF); HNSW keeps them as tombstones that search skips (the metadata row is gone;
index.json counts them; rebuild the index when they pile up).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalign import __version__
from modalign.errors import ConfigError, MismatchError
from modalign.search.backends import IndexParams, VectorIndex, auto_kind
from modalign.search.metadata import Item, Metadata

logger = logging.getLogger(__name__)

FORMAT = "modalign.search_index"
INFO_NAME = "index.json"
VECTORS_NAME = "vectors.faiss"
ITEMS_NAME = "items.sqlite"


def model_config_hash(model_dir: str | Path) -> str:
    """Hash of a saved model's config.json and weights: an index is valid only for the space it was built in."""
    from modalign.utils.hashing import hash_files

    model_dir = Path(model_dir)
    files = [model_dir / "config.json", model_dir / "model.safetensors"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a saved modalign model (missing {missing[0].name})")
    return hash_files(files, length=16)


def space_hash(model_dir: str | Path) -> str:
    """The embedding space a model writes into: its own config hash, or, for a compatible upgrade bundle
    (modalign.workflows.upgrade), the hash of the old model it maps into."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return cfg.get("metadata", {}).get("compatible_with", {}).get("space") or model_config_hash(model_dir)


@dataclass
class IndexInfo:
    model: str  # the saved model folder that built the index (absolute path)
    space: str  # hash of the embedding space (see space_hash): queries must come from a model of this space
    embed_dim: int
    modality: str  # what the index holds: "image" (stamps, photos) or "text" (captions)
    kind: str  # a backends kind: flat, hnsw, ivf, ivf-int8, ivf-pq
    params: dict[str, int] = field(default_factory=dict)
    count: int = 0  # live items
    tombstones: int = 0  # deleted vectors still inside an HNSW graph
    towers: dict[str, int] = field(default_factory=dict)  # encoder tower -> items it encoded
    created: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "modalign_version": __version__, **self.__dict__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexInfo:
        if d.get("format") != FORMAT:
            raise MismatchError(f"not a modalign search index (format={d.get('format')!r})")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Hit:
    score: float  # cosine similarity (after InvGC when used)
    item: Item

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(float(self.score), 6), **self.item.to_dict()}


class SearchIndex:
    def __init__(self, folder: Path, info: IndexInfo, vectors: VectorIndex, items: Metadata):
        self.folder, self.info, self.vectors, self.items = folder, info, vectors, items

    # ---- create / open / save ---------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, model_dir: str | Path, embed_dim: int, modality: str,
               kind: str = "auto", expected_size: int = 0, params: IndexParams | None = None,
               train_vectors: np.ndarray | None = None, overwrite: bool = False) -> SearchIndex:
        folder = Path(folder)
        if (folder / INFO_NAME).exists() and not overwrite:
            raise ConfigError(f"{folder} already holds an index; use `modalign index add` to extend it, or "
                              f"--overwrite to rebuild it")
        folder.mkdir(parents=True, exist_ok=True)
        for name in (VECTORS_NAME, ITEMS_NAME):
            (folder / name).unlink(missing_ok=True)
        kind = auto_kind(expected_size) if kind == "auto" else kind
        params = params or IndexParams()
        vectors = VectorIndex.create(kind, embed_dim, params, train_vectors)
        now = time.time()
        info = IndexInfo(str(Path(model_dir).resolve()), space_hash(model_dir), embed_dim, modality, kind,
                         params.to_dict(), created=now, updated=now)
        index = cls(folder, info, vectors, Metadata(folder / ITEMS_NAME))
        index.save()
        logger.info("created a %s index for %s items in %s", kind, modality, folder)
        return index

    @classmethod
    def open(cls, folder: str | Path) -> SearchIndex:
        folder = Path(folder)
        info_path = folder / INFO_NAME
        if not info_path.is_file():
            raise FileNotFoundError(f"{folder} is not a search index (no {INFO_NAME}); build one with "
                                    f"`modalign index build`")
        info = IndexInfo.from_dict(json.loads(info_path.read_text()))
        params = IndexParams(**info.params)
        vectors = VectorIndex.load(folder / VECTORS_NAME, info.kind, info.embed_dim, params)
        return cls(folder, info, vectors, Metadata(folder / ITEMS_NAME))

    def save(self) -> None:
        from modalign.utils.io import atomic_write_json

        tmp = self.folder / (VECTORS_NAME + ".tmp")
        self.vectors.save(tmp)
        tmp.replace(self.folder / VECTORS_NAME)
        self.info.count = len(self.items)
        self.info.towers = self.items.counts_by_tower()
        self.info.updated = time.time()
        atomic_write_json(self.folder / INFO_NAME, self.info.to_dict())

    def close(self) -> None:
        self.items.close()

    def __len__(self) -> int:
        return self.info.count

    def check_model(self, model_dir: str | Path) -> None:
        """Refuses a query model that writes into another embedding space than the indexed vectors."""
        got = space_hash(model_dir)
        if got != self.info.space:
            raise MismatchError(
                f"model {model_dir} embeds into space {got}, but {self.folder} was built in space "
                f"{self.info.space} (by {self.info.model}); query with that model or a compatible upgrade "
                f"of it (`modalign index upgrade`), or rebuild the index")

    # ---- add / delete -----------------------------------------------------------------------
    def add(self, vectors: np.ndarray, items: Sequence[Item], save: bool = True) -> int:
        """Adds (n, dim) vectors with their items; items whose key is already indexed are skipped."""
        if len(vectors) != len(items):
            raise ValueError(f"{len(vectors)} vectors for {len(items)} items")
        known = self.items.existing_keys(it.key for it in items)
        keep = [i for i, it in enumerate(items) if it.key not in known]
        if known:
            logger.info("%d of %d items are already in the index and were skipped", len(known), len(items))
        if not keep:
            return 0
        vecs = _normalize(np.asarray(vectors, dtype=np.float32)[keep])
        start = self.items.next_vid()
        vids = np.arange(start, start + len(keep), dtype=np.int64)
        new_items = [items[i] for i in keep]
        for it, vid in zip(new_items, vids, strict=True):
            it.vid = int(vid)
        self.vectors.add(vecs, vids)
        self.items.insert(new_items)
        if save:
            self.save()
        return len(keep)

    def delete(self, keys: Sequence[str], save: bool = True) -> int:
        found = self.items.vids_of(list(keys))
        if not found:
            return 0
        vids = np.fromiter(found.values(), dtype=np.int64)
        if not self.vectors.remove(vids):
            self.info.tombstones += len(vids)
        self.items.delete_vids(vids.tolist())
        if save:
            self.save()
        return len(found)

    # ---- search -------------------------------------------------------------------------------
    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_q, dim) -> scores, vids (n_q, k'), deleted (tombstoned) vectors left out; vid -1 pads."""
        queries = _normalize(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if queries.shape[1] != self.info.embed_dim:
            raise MismatchError(f"queries are {queries.shape[1]}-d; this index holds {self.info.embed_dim}-d vectors")
        fetch = k + min(self.info.tombstones, 4 * k + 64)
        scores, vids = self.vectors.search(queries, fetch)
        if self.info.tombstones:
            live = set(self.items.get(np.unique(vids[vids >= 0]).tolist()))
            scores, vids = _keep_live(scores, vids, live, k)
        return scores[:, :k], vids[:, :k]

    def search(self, queries: np.ndarray, k: int = 10, rerank: Any = None) -> list[list[Hit]]:
        """Top-k hits per query; `rerank(queries, scores, vids, index) -> (scores, vids)` post-processes
        (e.g. InvGC) a candidate list of 4k."""
        if rerank is None:
            scores, vids = self.search_ids(queries, k)
        else:
            scores, vids = self.search_ids(queries, max(4 * k, 50))
            scores, vids = rerank(_normalize(np.atleast_2d(queries)), scores, vids, self)
            scores, vids = scores[:, :k], vids[:, :k]
        meta = self.items.get(np.unique(vids[vids >= 0]).tolist())
        return [[Hit(float(s), meta[int(v)]) for s, v in zip(row_s, row_v, strict=True) if int(v) in meta]
                for row_s, row_v in zip(scores, vids, strict=True)]

    def item_vectors(self, vids: np.ndarray) -> np.ndarray:
        return self.vectors.reconstruct(np.asarray(vids, dtype=np.int64))


def _keep_live(scores: np.ndarray, vids: np.ndarray, live: set[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    out_s = np.full((len(vids), k), -np.inf, dtype=np.float32)
    out_v = np.full((len(vids), k), -1, dtype=np.int64)
    for r in range(len(vids)):
        keep = [j for j, v in enumerate(vids[r]) if int(v) in live][:k]
        out_s[r, :len(keep)], out_v[r, :len(keep)] = scores[r, keep], vids[r, keep]
    return out_s, out_v


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
