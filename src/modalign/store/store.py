"""EmbeddingStore: encode a column once, reuse the vectors always.

    store = EmbeddingStore(".modalign/store")
    out = store.encode(column, encoder, ["blocks.9", "final"])    # {layer: StoredEmbeddings}
    emb = store.get(column, encoder, "final")                     # a complete entry, or None

Each (column, encoder, layer, dtype) is one entry: a folder named after its cache key's digest (see
manifest.py for what it holds). An interrupted encode resumes from the shards already on disk. Items that
another entry of the same encoder, layer, preprocessing and dtype already holds (equal content, any data
set) are copied from it instead of encoded (items.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.errors import ConfigError, MismatchError
from modalign.store import items as it
from modalign.store import manifest as mf
from modalign.store.embeddings import StoredEmbeddings
from modalign.store.encode_plan import PendingEntry, encode_shards
from modalign.store.key import CacheKey, check_dtype
from modalign.store.lock import entry_lock
from modalign.store.report import EncodeReport, count_reasons
from modalign.store.shards import (
    SHARD_GLOB,
    ShardLayout,
    check_shard,
    read_sidecar,
    remove_shard,
    remove_temp_files,
)
from modalign.utils.paths import user_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from modalign.data.column import Column
    from modalign.encoders.base import Encoder

logger = logging.getLogger(__name__)


@dataclass
class _EntryState:
    """What is on disk for one requested layer, before encoding."""

    layer: str
    key: CacheKey
    folder: Path
    dim: int
    manifest: mf.Manifest | None  # None: a new entry
    good: set[int] = field(default_factory=set)  # complete shards found on disk
    todo: set[int] = field(default_factory=set)  # shards to compute

    @property
    def done(self) -> bool:
        return self.manifest is not None and self.manifest.complete and not self.todo


@dataclass
class EncodePlan:
    """What one encode run must write: the unfinished entries' pending shards, in one shard layout."""

    ids: list[str]  # the column's item ids
    states: list[_EntryState]  # every requested entry, finished or not
    layout: ShardLayout
    pending: list[PendingEntry]  # entries with shards to write (their .todo)
    start: float  # perf_counter() when the plan was made


class EmbeddingStore:
    def __init__(self, root: str | Path):
        self.root = user_path(root)  # e.g. "~/.cache/modalign/store"; created on the first encode

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.root)!r})"

    def path_of(self, key: CacheKey) -> Path:
        return self.root / key.digest()

    # ---- writing ----------------------------------------------------------------------------
    def encode(self, column: Column, encoder: Encoder, layers: Sequence[str] | str | None = None, *,
               dtype: str = "float32", batch_size: int = 32, shard_size: int = 256, num_workers: int = 2,
               progress: bool = True) -> dict[str, StoredEmbeddings]:
        """Encodes `column` at each of `layers` (default: final), reusing every complete shard on disk.

        One forward pass per batch serves all layers; each layer is its own entry. Items the encoder
        rejects are skipped with their reason. Returns {layer name: StoredEmbeddings}.
        """
        with self.plan_encode(column, encoder, layers, dtype=dtype, batch_size=batch_size,
                              shard_size=shard_size, num_workers=num_workers) as plan:
            if plan.pending:
                encode_shards(column.ids, column.items, encoder, plan.layout, plan.pending,
                              num_workers=num_workers, progress=progress,
                              desc=f"encode {encoder.spec} ({column.modality})")
            return self.complete(plan, {p.layer: p.written for p in plan.pending})

    @contextmanager
    def plan_encode(self, column: Column, encoder: Encoder, layers: Sequence[str] | str | None = None, *,
                    dtype: str = "float32", batch_size: int = 32, shard_size: int = 256,
                    num_workers: int = 2) -> Iterator[EncodePlan]:
        """Locks the entries of `column` x `layers`, checks their shards and starts the unfinished ones.

        Inside the block, any process may write the plan's pending shards (`encode_shards`, or Ray workers);
        then `complete(plan, written)` finishes the entries. The locks are released on leaving the block.
        """
        _check_options(dtype, batch_size, shard_size, num_workers)
        _check_modality(column, encoder)
        names = list(dict.fromkeys(encoder.resolve_layers(layers)))
        start = time.perf_counter()
        keys = {name: CacheKey.for_column(column, encoder, name, dtype) for name in names}
        # entries that are already complete are read without taking their locks: a reader never waits for
        # another process that holds them while it encodes other layers (manifests and shards are only
        # ever replaced atomically, so a complete entry reads the same with or without the lock)
        states = [self._inspect(name, keys[name], encoder.layer_info(name).dim, locked=False) for name in names]
        if all(s.done for s in states):
            yield EncodePlan(list(column.ids), states, ShardLayout(len(column), shard_size, batch_size), [], start)
            return
        with ExitStack() as locks:
            # only the unfinished entries are locked (in one global order: no deadlock): a complete entry of
            # the list stays readable by others, and is not waited for here, while the rest is encoded
            for folder in sorted({s.folder for s in states if not s.done}):
                locks.enter_context(entry_lock(folder))
            states = [s if s.done else self._inspect(s.layer, s.key, s.dim) for s in states]
            todo = [s for s in states if not s.done]
            layout = _choose_layout(todo, ShardLayout(len(column), shard_size, batch_size))
            pending = [self._begin(s, layout, column, encoder) for s in todo]
            yield EncodePlan(list(column.ids), states, layout, pending, start)

    def complete(self, plan: EncodePlan, written: dict[str, int]) -> dict[str, StoredEmbeddings]:
        """Finishes the entries that got new shards and opens every entry of the plan.

        `written`: layer -> shards written by this run (by this process or by distributed workers).
        """
        reused = {p.layer: p.reused for p in plan.pending}
        return self._complete(plan.states, plan.ids, written, plan.start, reused)

    def _complete(self, states: list[_EntryState], ids: Sequence[str], written: dict[str, int],
                  start: float, reused: dict[str, int] | None = None) -> dict[str, StoredEmbeddings]:
        out = {}
        for s in states:
            if s.layer in written:
                self._finish(s, ids)
            emb = self._load(s.folder, s.key)
            if not it.marker_path(self.root, s.key).exists():  # an entry completed before markers existed
                it.add_marker(self.root, s.key)
            emb.report.shards_reused = len(s.good)
            emb.report.shards_written = written.get(s.layer, 0)
            emb.report.items_copied = (reused or {}).get(s.layer, 0)
            emb.report.seconds = time.perf_counter() - start
            verb = "reused" if s.layer not in written else "stored"
            logger.info("%s %s: %s", verb, s.key.describe(), emb.report.summary())
            out[s.layer] = emb
        return out

    def _inspect(self, layer: str, key: CacheKey, dim: int, locked: bool = True) -> _EntryState:
        """Reads an entry's manifest (checking its key) and finds which shards are complete.

        `locked`: we hold the entry's lock, so leftovers of killed writers and damaged shards may be
        deleted; without it (a reader's look) nothing is changed on disk.
        """
        folder = self.path_of(key)
        manifest = mf.read_manifest(folder, key)
        state = _EntryState(layer, key, folder, dim, manifest)
        removed = remove_temp_files(folder) if locked else 0  # temp files are a killed writer's leftovers
        if removed:
            logger.debug("removed %d temp file(s) left in %s", removed, folder)
        if manifest is None or (not locked and not manifest.complete):
            return state
        lay = manifest.layout
        for i in range(lay.n_shards):
            problem = check_shard(folder, i, lay, key.digest(), dim, key.dtype)
            if problem is None:
                state.good.add(i)
                continue
            if not locked:
                state.todo.add(i)
                return state  # a writer (holding the lock) will look again and repair it
            if problem != "missing":
                logger.warning("store entry %s: shard %d is damaged (%s); encoding it again", folder.name, i, problem)
                remove_shard(folder, i)
            state.todo.add(i)
        if manifest.complete and state.todo:
            logger.warning("store entry %s was complete but %d shard(s) are gone or damaged; repairing it",
                           folder.name, len(state.todo))
        return state

    def _begin(self, state: _EntryState, layout: ShardLayout, column: Column, encoder: Encoder) -> PendingEntry:
        """Writes the manifest (complete: false) and ids of an entry about to be (re)encoded."""
        folder = state.folder
        if state.manifest is not None and state.manifest.layout != layout:
            logger.warning("store entry %s was started with %s, this run uses %s; starting it over",
                           folder.name, state.manifest.layout, layout)
            for p in folder.glob(SHARD_GLOB):
                remove_shard(folder, int(p.stem.split("-")[1]))
            state.good.clear()
        state.todo = set(range(layout.n_shards)) - state.good
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / mf.IDS).exists():
            mf.write_ids(folder, list(column.ids))
        if not (folder / it.ITEM_HASHES).exists():
            it.write_item_hashes(folder, column.item_hashes())
        created = state.manifest.created if state.manifest is not None else _now()
        mf.write_manifest(folder, mf.Manifest(state.key, state.dim, layout, complete=False, created=created,
                                              info=_provenance(encoder)))
        pending = PendingEntry(state.layer, folder, state.key.digest(), state.dim, state.key.dtype, set(state.todo))
        pending.reuse = self._reusable(state.key, column)
        if pending.reuse is not None:
            pending.reused = sum(int(pending.reuse.found(layout.rows(i)).sum()) for i in state.todo)
            logger.info("%d of %d items of %s are in other store entries: copied, not encoded",
                        pending.reused, len(column), state.key.describe())
        return pending

    def _reusable(self, key: CacheKey, column: Column) -> it.ReusedRows | None:
        """The rows of `column` that complete entries of the same encoder, layer and dtype already hold."""
        sources = []
        for digest in it.source_digests(self.root, key):
            try:
                entry = self.open(digest)
                hashes = it.read_item_hashes(entry.path)
            except (ConfigError, MismatchError, OSError, ValueError) as e:
                logger.debug("store entry %s is no source of reusable items: %s", digest, e)
                continue
            if it.reuse_digest(entry.key) != it.reuse_digest(key) or len(hashes) != len(entry):
                continue  # a misplaced marker or a damaged entry: never a source
            sources.append((entry, hashes))
        return it.match_items(column.item_hashes(), sources) if sources else None

    def _finish(self, state: _EntryState, ids: Sequence[str]) -> None:
        """Gathers the sidecars into valid.npy / skipped.json, then marks the manifest complete."""
        folder = state.folder
        manifest = mf.read_manifest(folder, state.key)
        if manifest is None:
            raise MismatchError(f"store entry {folder}: manifest.json vanished while encoding; encode again")
        lay = manifest.layout
        valid = np.zeros(lay.n_items, dtype=bool)  # (n,)
        skipped: dict[str, str] = {}
        checksums: list[str | None] = []
        for i in range(lay.n_shards):
            problem = check_shard(folder, i, lay, state.key.digest(), state.dim, state.key.dtype)
            if problem is not None:
                raise MismatchError(f"store entry {folder}: shard {i} is {problem} right after encoding; encode again")
            meta = read_sidecar(folder, i, lay, state.key.digest(), state.dim, state.key.dtype)
            valid[lay.rows(i).start : lay.rows(i).stop] = meta.valid
            skipped.update(meta.skipped)
            checksums.append(meta.checksum)
        mf.write_summary(folder, valid, skipped)
        manifest.checksums = None if None in checksums else [c for c in checksums if c is not None]
        manifest.complete = True
        manifest.n_encoded = int(valid.sum())
        manifest.n_skipped = len(ids) - manifest.n_encoded
        manifest.reasons = dict(count_reasons(skipped))
        manifest.completed = _now()
        mf.write_manifest(folder, manifest)  # last: from here on the entry counts as complete
        it.add_marker(self.root, state.key)  # its items can now be reused by other entries

    # ---- reading ----------------------------------------------------------------------------
    def get(self, column: Column, encoder: Encoder, layer: str = "final",
            dtype: str = "float32") -> StoredEmbeddings | None:
        """The complete entry for (column, encoder, layer, dtype), or None when it is absent or unfinished.

        Raises MismatchError when the entry's manifest holds a different key (it is never reused silently).
        """
        check_dtype(dtype)
        _check_modality(column, encoder)
        (name,) = encoder.resolve_layers(layer)
        key = CacheKey.for_column(column, encoder, name, dtype)
        manifest = mf.read_manifest(self.path_of(key), key)
        if manifest is None or not manifest.complete:
            return None
        return self._load(self.path_of(key), key)

    def open(self, digest: str) -> StoredEmbeddings:
        """A complete entry by its digest (folder name), e.g. from `entries()`."""
        folder = self.root / digest
        manifest = mf.read_manifest(folder)
        if manifest is None:
            raise ConfigError(f"no store entry {digest!r} in {self.root}; list them with `modalign store ls`")
        if not manifest.complete:
            raise ConfigError(f"store entry {digest!r} is unfinished; run the same encode again to complete it")
        return self._load(folder, manifest.key)

    def _load(self, folder: Path, key: CacheKey) -> StoredEmbeddings:
        manifest = mf.read_manifest(folder, key)
        if manifest is None or not manifest.complete:
            raise MismatchError(f"store entry {folder} is not complete; encode again")
        try:
            ids = mf.read_ids(folder)
            valid, skipped = mf.read_summary(folder)
        except (OSError, ValueError) as e:
            raise MismatchError(f"store entry {folder} is damaged ({type(e).__name__}: {e}); "
                                f"delete the folder and encode again") from e
        report = EncodeReport(
            n_items=manifest.layout.n_items, n_encoded=manifest.n_encoded, n_skipped=manifest.n_skipped,
            reasons=count_reasons(skipped), shards_reused=manifest.layout.n_shards,
        )
        return StoredEmbeddings(key, folder, ids, manifest.dim, manifest.layout, valid, skipped, report,
                                checksums=manifest.checksums)

    def entries(self) -> list[dict[str, Any]]:
        """Every entry's manifest (plus digest, path, bytes on disk), oldest first; for `modalign store ls`."""
        out: list[dict[str, Any]] = []
        if not self.root.is_dir():
            return out
        for folder in sorted(p for p in self.root.iterdir() if (p / mf.MANIFEST).is_file()):
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            try:
                manifest = mf.read_manifest(folder)
            except MismatchError as e:
                out.append({"digest": folder.name, "path": str(folder), "bytes": size, "error": str(e)})
                continue
            if manifest is None:  # deleted between the listing and the read
                continue
            out.append({**manifest.to_dict(), "digest": folder.name, "path": str(folder), "bytes": size})
        return sorted(out, key=lambda e: (e.get("created", ""), e["digest"]))

    def remove(self, digest: str) -> None:
        """Deletes one entry's folder."""
        folder = self.root / digest
        if not (folder / mf.MANIFEST).is_file():
            raise ConfigError(f"no store entry {digest!r} in {self.root}")
        try:
            manifest = mf.read_manifest(folder)
        except MismatchError:
            manifest = None  # a damaged entry: its marker (if any) is skipped as a source anyway
        if manifest is not None:
            it.remove_marker(self.root, manifest.key)
        shutil.rmtree(folder)


def _choose_layout(todo: list[_EntryState], requested: ShardLayout) -> ShardLayout:
    """An unfinished entry keeps the layout it was started with, so resumed vectors are bit-identical."""
    for s in todo:
        if s.manifest is not None and s.manifest.layout.n_items == requested.n_items:
            if s.manifest.layout != requested:
                logger.info("resuming %s with shard_size=%d, batch_size=%d as it was started (asked for %d, %d)",
                            s.folder.name, s.manifest.layout.shard_size, s.manifest.layout.batch_size,
                            requested.shard_size, requested.batch_size)
            return s.manifest.layout
    return requested


def _check_options(dtype: str, batch_size: int, shard_size: int, num_workers: int) -> None:
    check_dtype(dtype)
    for name, value, low in (("batch_size", batch_size, 1), ("shard_size", shard_size, 1),
                             ("num_workers", num_workers, 0)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_modality(column: Column, encoder: Encoder) -> None:
    if column.modality != encoder.modality:
        raise MismatchError(f"column holds {column.modality!r} items but encoder {encoder.spec!r} encodes "
                            f"{encoder.modality!r}; pick an encoder of the column's modality")


def _provenance(encoder: Encoder) -> dict[str, Any]:
    import torch

    from modalign import __version__

    return {"modalign": __version__, "torch": torch.__version__, "device": str(getattr(encoder, "device", "cpu"))}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
