"""The encode loop: decode in worker threads, one forward pass per batch for every layer, shards out.

    items --encoder.load (thread pool, next batches prefetched)--> decoded
          --encoder.collate--> batch --encoder.forward(batch, layers)--> {layer: (B, D)}
          --> per-layer shard buffers --> write_shard (atomic) when a shard's last batch is done

Items whose `load` raises InvalidItem are skipped with the reason; their rows stay zeros and are
flagged invalid. Vectors that are not finite after the cast to the storage dtype are skipped too.
Rows another entry already holds (`PendingEntry.reuse`, see items.py) are copied into the shard buffer
first; only the other rows of a shard are batched through the encoder (all of them, in the shard's
fixed batches, when nothing is reused).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.errors import InvalidItem, MismatchError
from modalign.store.shards import ShardLayout, write_shard

if TYPE_CHECKING:
    from modalign.encoders.base import Encoder
    from modalign.store.items import ReusedRows

logger = logging.getLogger(__name__)

PREFETCH_BATCHES = 2  # batches being decoded ahead of the one in the forward pass


@dataclass
class PendingEntry:
    """One layer's entry and the shards it still needs."""

    layer: str
    folder: Path
    digest: str
    dim: int
    dtype: str  # storage dtype
    todo: set[int]  # shard indices to compute
    written: int = 0  # shards written by this run
    reuse: ReusedRows | None = None  # rows whose vectors other entries hold (copied, not encoded)
    reused: int = 0  # rows of the todo shards found in `reuse` when the plan was made


@dataclass
class _ShardBuffer:
    vectors: np.ndarray  # (rows, dim) storage dtype; zeros where skipped
    valid: np.ndarray  # (rows,) bool
    skipped: dict[str, str] = field(default_factory=dict)


def _load_one(load: Callable[[Any], Any], item: Any) -> tuple[bool, Any]:
    """(True, decoded) or (False, reason) for an item the encoder rejects."""
    try:
        return True, load(item)
    except InvalidItem as e:
        return False, e.reason


class _Loader:
    """Runs encoder.load on a thread pool (or inline when num_workers == 0)."""

    def __init__(self, load: Callable[[Any], Any], num_workers: int):
        self.load = load
        self.pool = ThreadPoolExecutor(num_workers, thread_name_prefix="modalign-load") if num_workers > 0 else None

    def submit(self, item: Any) -> Future:
        if self.pool is not None:
            return self.pool.submit(_load_one, self.load, item)
        done: Future = Future()
        done.set_result(_load_one(self.load, item))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def encode_shards(ids: Sequence[str], items: Sequence[Any], encoder: Encoder, layout: ShardLayout,
                  pending: list[PendingEntry], *, num_workers: int = 2, progress: bool = True,
                  desc: str = "encode") -> None:
    """Computes every shard some entry in `pending` needs, with one forward pass per batch for all layers."""
    shards = sorted(set().union(*(p.todo for p in pending)))
    if not shards:
        return
    remaining: dict[int, int] = {}  # batches left before shard s can be written
    buffers: dict[int, dict[str, _ShardBuffer]] = {}

    from tqdm.auto import tqdm

    done_rows = layout.n_items - sum(len(layout.rows(s)) for s in shards)
    bar = tqdm(total=layout.n_items, initial=done_rows, desc=desc, unit="item",
               disable=None if progress else True, dynamic_ncols=True)
    loader = _Loader(encoder.load, num_workers)
    queue: deque[tuple[int, list[int], list[Future]]] = deque()

    def write(s: int) -> None:
        for p in pending:
            if s in p.todo:
                buf = buffers[s][p.layer]
                write_shard(p.folder, s, layout, p.digest, buf.vectors, buf.valid, buf.skipped)
                p.written += 1
        del buffers[s]

    def tasks() -> Iterator[tuple[int, list[int]]]:
        """Batches of rows to encode, shard by shard; a shard's reusable rows are filled in as it starts."""
        for s in shards:
            buffers[s], rows = _start_shard(s, layout, [p for p in pending if s in p.todo])
            bar.update(len(layout.rows(s)) - len(rows))
            batches = [rows[i : i + layout.batch_size] for i in range(0, len(rows), layout.batch_size)]
            if not batches:
                write(s)  # every row was reused
                continue
            remaining[s] = len(batches)
            yield from ((s, b) for b in batches)

    next_task = tasks()

    def fill() -> None:
        while len(queue) < PREFETCH_BATCHES:
            task = next(next_task, None)
            if task is None:
                return
            s, rows = task
            queue.append((s, rows, [loader.submit(items[r]) for r in rows]))

    try:
        fill()
        while queue:
            s, rows, futures = queue.popleft()
            fill()  # the next batches decode while this one runs
            wanted = [p for p in pending if s in p.todo]
            _run_batch(encoder, ids, rows, futures, layout.rows(s).start, wanted, buffers[s])
            bar.update(len(rows))
            remaining[s] -= 1
            if remaining[s] == 0:
                write(s)
    finally:
        loader.close()
        bar.close()


def _start_shard(s: int, layout: ShardLayout, wanted: list[PendingEntry]) -> tuple[dict[str, _ShardBuffer], list[int]]:
    """Shard s's empty buffers with the reusable rows filled in, and the rows left to encode (for every layer)."""
    rows = layout.rows(s)
    n = len(rows)
    buffers = {p.layer: _ShardBuffer(np.zeros((n, p.dim), dtype=p.dtype), np.zeros(n, dtype=bool)) for p in wanted}
    done = np.ones(n, dtype=bool)  # (n,) rows every layer could copy
    for p in wanted:
        filled = np.zeros(n, dtype=bool)
        if p.reuse is not None and p.reuse.found(rows).any():
            filled = p.reuse.fill(rows, buffers[p.layer].vectors, buffers[p.layer].valid)
        done &= filled
    return buffers, [rows.start + int(i) for i in np.flatnonzero(~done)]


def _run_batch(encoder: Encoder, ids: Sequence[str], rows: Sequence[int], futures: list[Future], shard_start: int,
               wanted: list[PendingEntry], buffers: dict[str, _ShardBuffer]) -> None:
    """Gathers one batch's decoded items, runs the forward pass once, files the vectors per layer."""
    loaded, keep, skipped = [], [], []
    for r, fut in zip(rows, futures, strict=True):
        try:
            ok, value = fut.result()
        except Exception as e:
            e.add_note(f"while loading item {ids[r]!r} (row {r}); an encoder should raise InvalidItem for a bad item")
            raise
        if ok:
            loaded.append(value)
            keep.append(r - shard_start)
        else:
            skipped.append((r - shard_start, ids[r], value))
            logger.debug("skipped %s: %s", ids[r], value)
    for buf in buffers.values():
        # a row this layer already copied from another entry keeps its vector
        buf.skipped.update((item_id, reason) for row, item_id, reason in skipped if not buf.valid[row])
    if not loaded:
        return
    out = encoder.forward(encoder.collate(loaded), [p.layer for p in wanted])
    local = np.asarray(keep, dtype=np.int64)  # rows of this batch inside the shard
    for p in wanted:
        if p.layer not in out:
            raise MismatchError(f"encoder {encoder.spec!r} returned no output for layer {p.layer!r}")
        vec = out[p.layer].detach().float().cpu().numpy()  # (B, D)
        if vec.shape != (len(loaded), p.dim):
            raise MismatchError(f"encoder {encoder.spec!r} returned {vec.shape} at layer {p.layer!r}; "
                                f"expected ({len(loaded)}, {p.dim}) as its layer info declares")
        with np.errstate(over="ignore", invalid="ignore"):  # float16 overflow -> inf, caught just below
            vec = vec.astype(p.dtype)
        finite = np.isfinite(vec).all(axis=1)  # (B,)
        buf = buffers[p.layer]
        buf.vectors[local[finite]] = vec[finite]
        buf.valid[local[finite]] = True
        for r in local[~finite]:
            item_id = ids[shard_start + int(r)]
            buf.skipped[item_id] = f"non-finite vector (NaN or inf in {p.dtype})"
            logger.debug("skipped %s at layer %s: non-finite vector", item_id, p.layer)
