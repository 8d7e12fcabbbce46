"""SearchIndex: a self-describing folder of vectors + item metadata, searched by an aligned model's queries.

    INDEX/
      index.json        format, model path + config hash, embed dim, modality, kind, params, counts
      vectors.<G>.faiss the FAISS index of generation G (ids = the vid column of items.sqlite)
      items.sqlite      one row per vector: key, modality, path, caption, tower, added time; + generation G

Adds and deletes are transactions (storage.py): vectors are written first, the rows and the generation
are committed after, in one SQLite transaction, so a kill -9 or a full disk never leaves rows without
vectors; `open` repairs whatever an interrupted write left. Every vector is L2-normalised, so scores
are cosine similarities. Deletes remove vectors where the kind allows it (flat, IVF); HNSW and refined
PQ keep them as tombstones that search skips (index.json counts them; rebuild when they pile up).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalign import __version__
from modalign.errors import ConfigError, MismatchError
from modalign.search import storage
from modalign.search.backends import IndexParams, VectorIndex, auto_kind, default_params
from modalign.search.metadata import Item, Metadata
from modalign.utils.paths import user_path

logger = logging.getLogger(__name__)

FORMAT = "modalign.search_index"
INFO_NAME = "index.json"
ITEMS_NAME = "items.sqlite"


def model_config_hash(model_dir: str | Path) -> str:
    """Hash of a saved model's config.json and weights: an index is valid only for the space it was built in."""
    from modalign.utils.hashing import hash_files

    model_dir = user_path(model_dir)
    files = [model_dir / "config.json", model_dir / "model.safetensors"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a saved modalign model (missing {missing[0].name})")
    return hash_files(files, length=16)


def space_hash(model_dir: str | Path) -> str:
    """The embedding space a model writes into: its own config hash, or, for a compatible upgrade bundle
    (modalign.workflows.upgrade), the hash of the old model it maps into."""
    cfg = json.loads((user_path(model_dir) / "config.json").read_text())
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
    tombstones: int = 0  # deleted vectors still inside an HNSW graph (or a refined PQ index)
    generation: int = 0  # commits so far: names the vectors file (vectors.<generation>.faiss)
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
    relevance: float | None = None  # calibrated P(relevant | score), when the index has a calibration (relevance.py)

    def to_dict(self) -> dict[str, Any]:
        rel = {} if self.relevance is None else {"relevance": round(float(self.relevance), 6)}
        return {"score": round(float(self.score), 6), **rel, **self.item.to_dict()}


class SearchIndex:
    def __init__(self, folder: Path, info: IndexInfo, vectors: VectorIndex, items: Metadata):
        self.folder, self.info, self.vectors, self.items = folder, info, vectors, items

    # ---- create / open ------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, model_dir: str | Path, embed_dim: int, modality: str,
               kind: str = "auto", expected_size: int = 0, params: IndexParams | None = None,
               train_vectors: np.ndarray | None = None, overwrite: bool = False) -> SearchIndex:
        from modalign.store.lock import entry_lock

        folder = Path(folder).expanduser()
        if (folder / INFO_NAME).exists() and not overwrite:
            raise ConfigError(f"{folder} already holds an index; use `modalign index add` to extend it, or "
                              f"--overwrite to rebuild it")
        kind = auto_kind(expected_size) if kind == "auto" else kind
        n = len(train_vectors) if train_vectors is not None else expected_size
        vectors = VectorIndex.create(kind, embed_dim, default_params(kind, n, params), train_vectors)
        with entry_lock(folder):
            (folder / INFO_NAME).unlink(missing_ok=True)  # first: a kill from here on leaves "no index"
            for name in (ITEMS_NAME, ITEMS_NAME + "-journal", ITEMS_NAME + "-wal", ITEMS_NAME + "-shm"):
                (folder / name).unlink(missing_ok=True)
            storage.remove_stale(folder, -1)
            now = time.time()
            info = IndexInfo(str(user_path(model_dir).resolve()), space_hash(model_dir), embed_dim, modality, kind,
                             vectors.params.to_dict(), created=now, updated=now, generation=-1)
            index = cls(folder, info, vectors, Metadata(folder / ITEMS_NAME))
            index._commit(vectors_changed=True)
        logger.info("created a %s index for %s items in %s", kind, modality, folder)
        return index

    @classmethod
    def open(cls, folder: str | Path) -> SearchIndex:
        """Opens an index; finishes or undoes what an interrupted write left (see storage.py)."""
        from modalign.store.lock import entry_lock

        folder = Path(folder).expanduser()
        info_path = folder / INFO_NAME
        if not info_path.is_file():
            raise FileNotFoundError(f"{folder} is not a search index (no {INFO_NAME}); build one with "
                                    f"`modalign index build`")
        try:
            info = IndexInfo.from_dict(json.loads(info_path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise MismatchError(f"{info_path} is damaged ({e}); rebuild the index with `modalign index build "
                                f"--overwrite`") from e
        with entry_lock(folder):
            index = cls(folder, info, *cls._load_committed(folder, info))
            index._repair()
        return index

    @staticmethod
    def _load_committed(folder: Path, info: IndexInfo) -> tuple[VectorIndex, Metadata]:
        items = Metadata(folder / ITEMS_NAME)
        state = items.state()
        generation = None if state is None else state[0]
        path = folder / storage.LEGACY_VECTORS if state is None else storage.vectors_file(folder, state[0])
        if not path.is_file():
            raise MismatchError(f"{folder} is damaged: its committed vectors file {path.name} is missing; "
                                f"rebuild the index with `modalign index build --overwrite`")
        storage.remove_stale(folder, generation)
        info.generation, info.tombstones = state if state is not None else (-1, info.tombstones)
        return VectorIndex.load(path, info.kind, info.embed_dim, IndexParams(**info.params)), items

    def _reload(self) -> None:
        """Back to the committed state on disk (after a failed write, or another process's commit)."""
        self.items.close()
        self.vectors, self.items = self._load_committed(self.folder, self.info)

    def _repair(self) -> None:
        """Rows without vectors (a legacy index's interrupted add) are dropped, so the next add re-adds
        them; vectors without rows become tombstones or are removed; a stale index.json is rewritten."""
        rows = len(self.items)
        legacy = self.info.generation < 0
        if self.vectors.ntotal != rows + self.info.tombstones:
            ids, vids = self.vectors.ids(), self.items.all_vids()
            lost = vids[~np.isin(vids, ids)]
            extra = ids[~np.isin(ids, vids)]
            logger.warning("%s: %d items had no vector (an interrupted write) and were dropped, so that "
                           "`modalign index add` adds them again; %d vectors had no item", self.folder,
                           len(lost), len(extra))
            removed = len(extra) > 0 and self.vectors.remove(extra)
            self.info.tombstones = 0 if removed else len(extra)
            self._commit(vectors_changed=bool(removed) or legacy, delete=lost.tolist())
        elif legacy:
            self._commit(vectors_changed=True)  # moves it to the generation layout
        elif self.info.count != rows:
            self._write_info()

    # ---- the commit (see storage.py) -----------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Holds the folder's lock; catches up first when another process committed since we loaded."""
        from modalign.store.lock import entry_lock

        with entry_lock(self.folder):
            state = self.items.state()
            if state is not None and state[0] != self.info.generation:
                logger.info("%s changed on disk (generation %d -> %d); reloading", self.folder,
                            self.info.generation, state[0])
                self._reload()
            yield

    def _commit(self, vectors_changed: bool, insert: Sequence[Item] = (), delete: Sequence[int] = ()) -> None:
        old = self.info.generation
        new = old + 1 if vectors_changed else old
        try:
            if vectors_changed:
                storage.write_vectors(self.vectors, self.folder, new)
            self.items.commit(new, self.info.tombstones, insert, delete)
        except (OSError, RuntimeError, sqlite3.Error) as e:
            if vectors_changed:
                storage.vectors_file(self.folder, new).unlink(missing_ok=True)
            if old >= 0:
                self._reload()  # the in-memory vectors hold the uncommitted change: drop it
            raise storage.IndexWriteError(
                f"could not write the index in {self.folder} ({type(e).__name__}: {e}); nothing was changed. "
                f"Free disk space (or fix permissions) and run the command again") from e
        storage.fault_point("metadata-committed")
        self.info.generation = new
        self._write_info()
        storage.fault_point("info-written")
        if new != old:
            storage.remove_stale(self.folder, new)
            storage.fault_point("old-vectors-removed")

    def _write_info(self) -> None:
        from modalign.utils.io import atomic_write_json

        self.info.count = len(self.items)
        self.info.towers = self.items.counts_by_tower()
        self.info.updated = time.time()
        try:
            atomic_write_json(self.folder / INFO_NAME, self.info.to_dict())
        except OSError as e:  # the commit stands; the summary is rebuilt on the next open
            logger.warning("could not update %s (%s); it is rewritten on the next open", INFO_NAME, e)

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
    def add(self, vectors: np.ndarray, items: Sequence[Item]) -> int:
        """Adds (n, dim) vectors with their items in one transaction; returns how many were added.

        Items whose key is already indexed are skipped, and so are non-finite (NaN / inf) vectors
        (counted and logged: they would score as ties with everything)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(vectors) != len(items):
            raise ValueError(f"{len(vectors)} vectors for {len(items)} items")
        finite = np.isfinite(vectors).all(axis=1) if len(vectors) else np.zeros(0, dtype=bool)
        if not finite.all():
            bad = [items[int(i)].key for i in np.flatnonzero(~finite)]
            logger.warning("skipped %d items with non-finite vectors (NaN / inf), e.g. %s", len(bad), bad[:5])
        with self._writing():
            known = self.items.existing_keys(it.key for it in items)
            if known:
                logger.info("%d of %d items are already in the index and were skipped", len(known), len(items))
            keep = [i for i, it in enumerate(items) if it.key not in known and finite[i]]
            if not keep:
                return 0
            start = self.items.next_vid()
            new_items = [items[i] for i in keep]
            for j, it in enumerate(new_items):
                it.vid = start + j
            self.vectors.add(_normalize(vectors[keep]), np.arange(start, start + len(keep), dtype=np.int64))
            self._commit(vectors_changed=True, insert=new_items)
        return len(keep)

    def delete(self, keys: Sequence[str]) -> int:
        with self._writing():
            found = self.items.vids_of(list(keys))
            if not found:
                return 0
            vids = np.fromiter(found.values(), dtype=np.int64)
            removed = self.vectors.remove(vids)
            if not removed:
                self.info.tombstones += len(vids)
            self._commit(vectors_changed=removed, delete=vids.tolist())
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
