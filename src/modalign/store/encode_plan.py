"""The encode loop: decode in worker threads, one forward pass per batch for every layer, shards out.

    items --encoder.load (thread pool, next batches prefetched)--> decoded
          --encoder.collate--> batch --encoder.forward(batch, layers)--> {layer: (B, D)}
          --> per-layer shard buffers --> write_shard (atomic) when a shard's last batch is done

Items whose `load` raises InvalidItem are skipped with the reason; their rows stay zeros and are
flagged invalid. Vectors that are not finite after the cast to the storage dtype are skipped too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.errors import InvalidItem, MismatchError
from modalign.store.shards import ShardLayout, write_shard

if TYPE_CHECKING:
    from modalign.encoders.base import Encoder

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
    tasks = [(s, rows) for s in shards for rows in layout.batches(s)]
    remaining = {s: len(layout.batches(s)) for s in shards}  # batches left before shard s can be written
    buffers: dict[int, dict[str, _ShardBuffer]] = {}

    from tqdm.auto import tqdm

    done_rows = layout.n_items - sum(len(layout.rows(s)) for s in shards)
    bar = tqdm(total=layout.n_items, initial=done_rows, desc=desc, unit="item",
               disable=None if progress else True, dynamic_ncols=True)
    loader = _Loader(encoder.load, num_workers)
    queue: deque[tuple[int, range, list[Future]]] = deque()
    next_task = iter(tasks)

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
            if s not in buffers:
                n = len(layout.rows(s))
                buffers[s] = {p.layer: _ShardBuffer(np.zeros((n, p.dim), dtype=p.dtype), np.zeros(n, dtype=bool))
                              for p in wanted}
            _run_batch(encoder, ids, rows, futures, layout.rows(s).start, wanted, buffers[s])
            bar.update(len(rows))
            remaining[s] -= 1
            if remaining[s] == 0:
                for p in wanted:
                    buf = buffers[s][p.layer]
                    write_shard(p.folder, s, layout, p.digest, buf.vectors, buf.valid, buf.skipped)
                    p.written += 1
                del buffers[s]
    finally:
        loader.close()
        bar.close()


def _run_batch(encoder: Encoder, ids: Sequence[str], rows: range, futures: list[Future], shard_start: int,
               wanted: list[PendingEntry], buffers: dict[str, _ShardBuffer]) -> None:
    """Gathers one batch's decoded items, runs the forward pass once, files the vectors per layer."""
    loaded, keep, skipped = [], [], {}
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
            skipped[ids[r]] = value
            logger.debug("skipped %s: %s", ids[r], value)
    for buf in buffers.values():
        buf.skipped.update(skipped)
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
