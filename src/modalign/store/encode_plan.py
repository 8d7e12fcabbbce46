"""The encode loop: decode in workers, one forward pass per batch for every layer, shards out.

    items --encoder.load (threads, or processes for image files; next batches prefetched)--> decoded
          --encoder.collate--> batch --encoder.forward(batch, layers)--> {layer: (B, D)}
          --> per-layer shard buffers --> write_shard (atomic) when a shard's last batch is done

Encoders whose inputs vary in length (text, padded audio: `Encoder.input_length`) are batched by
length: a whole shard is decoded, its items sorted by length and cut into batches, so each batch pads
to a similar length; vectors are filed back in row order. The order depends only on the shard's items,
so a resumed run still forms the same batches. Image files decode in worker processes (`Encoder.
process_loader`) on larger runs: SVG rendering holds the GIL and would stall the forward pass. Items whose `load` raises InvalidItem are skipped with
the reason; their rows stay zeros and are flagged invalid. Vectors that are not finite after the cast
to the storage dtype are skipped too. Rows another entry already holds (`PendingEntry.reuse`, see
items.py) are copied into the shard buffer first; only the other rows of a shard are encoded.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.errors import MismatchError, load_or_reason
from modalign.store.shards import ShardLayout, write_shard

if TYPE_CHECKING:
    from modalign.encoders.base import Encoder
    from modalign.store.items import ReusedRows

logger = logging.getLogger(__name__)

PREFETCH_BATCHES = 2  # batches being decoded ahead of the one in the forward pass (1 shard when length-sorted)
PROCESS_MIN_ITEMS = 64  # fewer items to encode: decode in threads (starting processes costs ~1 s)


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


def _start_processes(n: int) -> ProcessPoolExecutor | None:
    """n decode processes, forked (as torch's DataLoader does on Linux): they start in milliseconds and
    import nothing; they run only the picklable, torch-free decoder. Elsewhere: None (threads)."""
    if not sys.platform.startswith("linux"):
        return None  # macOS and Windows cannot fork safely; spawning would import the caller's __main__
    logger.debug("decoding in %d forked worker processes", n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: "multi-threaded, fork() may deadlock"
        return ProcessPoolExecutor(n, mp_context=mp.get_context("fork"))


class _Loader:
    """Runs encoder.load on worker threads, or in worker processes for files when the encoder has a
    picklable `process_loader` and the run is large enough to pay for starting them; collate runs on a
    thread of its own. Everything runs inline when num_workers == 0."""

    def __init__(self, encoder: Encoder, num_workers: int, n_items: int):
        # the process loader in threads too: its outputs collate like load's and may be cheaper
        # (image encoders: uint8 pixels that the forward normalises)
        light = encoder.process_loader()
        self.load = light or encoder.load
        self.pool = ThreadPoolExecutor(num_workers, thread_name_prefix="modalign-load") if num_workers > 0 else None
        # collate has its own thread so that it never waits behind the next shard's queued loads
        self.side = ThreadPoolExecutor(1, thread_name_prefix="modalign-collate") if num_workers > 0 else None
        self.process_load = light if num_workers > 0 and n_items >= PROCESS_MIN_ITEMS else None
        self.num_workers = num_workers
        self.procs: ProcessPoolExecutor | None = None  # started on the first file item

    def submit(self, item: Any) -> Future:
        if self.process_load is not None and isinstance(item, str | os.PathLike) and not self._cached(item):
            if self.procs is None:
                self.procs = _start_processes(self.num_workers)
            if self.procs is not None:
                return self.procs.submit(load_or_reason, self.process_load, item)
            self.process_load = None  # no process support here: threads
        if self.pool is not None:
            return self.pool.submit(load_or_reason, self.load, item)
        done: Future = Future()
        done.set_result(load_or_reason(self.load, item))
        return done

    def _cached(self, item: Any) -> bool:
        """Decoded already (a decode cache hit: a file read): threads do it without a process's overhead,
        which slowed the forward pass beside it 1.5x (BENCHMARKS.md)."""
        check = getattr(self.process_load, "is_cached", None)
        return bool(check is not None and check(item))

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """fn(*args) on the side thread (inline without workers); exceptions come out of .result()."""
        if self.side is not None:
            return self.side.submit(fn, *args)
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except Exception as e:
            done.set_exception(e)
        return done

    def close(self) -> None:
        for pool in (self.pool, self.side, self.procs):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Unit:
    """Rows decoded together: one batch, or a whole shard when batches are formed by input length."""

    shard: int
    rows: Sequence[int]
    futures: list[Future]


def encode_shards(ids: Sequence[str], items: Sequence[Any], encoder: Encoder, layout: ShardLayout,
                  pending: list[PendingEntry], *, num_workers: int = 2, progress: bool = True,
                  desc: str = "encode") -> None:
    """Computes every shard some entry in `pending` needs, with one forward pass per batch for all layers."""
    shards = sorted(set().union(*(p.todo for p in pending)))
    if not shards:
        return
    by_length = sorts_by_length(encoder)
    work = _ShardWork(layout, pending)

    from tqdm.auto import tqdm

    done_rows = layout.n_items - sum(len(layout.rows(s)) for s in shards)
    bar = tqdm(total=layout.n_items, initial=done_rows, desc=desc, unit="item",
               disable=None if progress else True, dynamic_ncols=True)
    loader = _Loader(encoder, num_workers, sum(len(layout.rows(s)) for s in shards))
    queue: deque[_Unit] = deque()
    ahead = 1 if by_length else PREFETCH_BATCHES
    next_task = work.units(shards, by_length, bar.update)

    def fill() -> None:
        while len(queue) < ahead:
            task = next(next_task, None)
            if task is None:
                return
            s, rows = task
            queue.append(_Unit(s, rows, [loader.submit(items[r]) for r in rows]))

    try:
        fill()
        while queue:
            unit = queue.popleft()
            fill()  # the next units decode while this one runs
            s = unit.shard
            wanted = [p for p in pending if s in p.todo]
            _run_unit(encoder, ids, unit, layout, wanted, work.buffers[s], by_length, loader)
            bar.update(len(unit.rows))
            work.remaining[s] -= 1
            if work.remaining[s] == 0:
                work.write(s)
    finally:
        loader.close()
        bar.close()


@dataclass
class _ShardWork:
    """The shards one encode run fills: their buffers, the units left in each, and writing them out."""

    layout: ShardLayout
    pending: list[PendingEntry]
    buffers: dict[int, dict[str, _ShardBuffer]] = field(default_factory=dict)
    remaining: dict[int, int] = field(default_factory=dict)  # units left before shard s can be written

    def write(self, s: int) -> None:
        for p in self.pending:
            if s in p.todo:
                buf = self.buffers[s][p.layer]
                write_shard(p.folder, s, self.layout, p.digest, buf.vectors, buf.valid, buf.skipped)
                p.written += 1
        del self.buffers[s]

    def units(self, shards: Sequence[int], by_length: bool,
              reused: Callable[[int], Any]) -> Iterator[tuple[int, list[int]]]:
        """Units of rows to encode, shard by shard (a whole shard when batches form by input length);
        a shard's reusable rows are filled in as it starts (`reused(n)` counts them)."""
        for s in shards:
            self.buffers[s], rows = _start_shard(s, self.layout, [p for p in self.pending if s in p.todo])
            reused(len(self.layout.rows(s)) - len(rows))
            size = len(rows) if by_length else self.layout.batch_size
            units = [rows[i : i + size] for i in range(0, len(rows), max(1, size))]
            if not units:
                self.write(s)  # every row was reused
                continue
            self.remaining[s] = len(units)
            yield from ((s, u) for u in units)


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


def sorts_by_length(encoder: Encoder) -> bool:
    """True when the encoder pads each batch to its longest input and asks for length-sorted batches."""
    return bool(getattr(encoder, "length_bucketing", False))


def _run_unit(encoder: Encoder, ids: Sequence[str], unit: _Unit, layout: ShardLayout, wanted: list[PendingEntry],
              buffers: dict[str, _ShardBuffer], by_length: bool, loader: _Loader) -> None:
    """Gathers a unit's decoded items, then runs one forward pass per batch (by length when asked)."""
    shard_start = layout.rows(unit.shard).start
    loaded, keep, skipped = [], [], []
    for r, fut in zip(unit.rows, unit.futures, strict=True):
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
    local = np.asarray(keep, dtype=np.int64)  # rows of the decoded items inside the shard
    if not by_length:
        if loaded:
            _run_batch(encoder, ids, encoder.collate(loaded), len(loaded), local, shard_start, wanted, buffers)
        return
    order = length_order(encoder, loaded)  # longest first, as sentence-transformers does
    picks = [order[i : i + layout.batch_size] for i in range(0, len(order), layout.batch_size)]
    collated = loader.call(encoder.collate, [loaded[i] for i in picks[0]]) if picks else None
    for k, pick in enumerate(picks):
        batch = collated.result()  # type: ignore[union-attr]
        if k + 1 < len(picks):  # tokenise the next batch while this one runs
            collated = loader.call(encoder.collate, [loaded[i] for i in picks[k + 1]])
        _run_batch(encoder, ids, batch, len(pick), local[pick], shard_start, wanted, buffers)


def length_order(encoder: Encoder, loaded: Sequence[Any]) -> np.ndarray:
    """Indices of `loaded`, longest input first (stable for ties): batches then pad to similar lengths."""
    lengths = np.fromiter((encoder.input_length(x) for x in loaded), dtype=np.int64, count=len(loaded))
    return np.argsort(-lengths, kind="stable")


def _run_batch(encoder: Encoder, ids: Sequence[str], batch: Any, n: int, local: np.ndarray, shard_start: int,
               wanted: list[PendingEntry], buffers: dict[str, _ShardBuffer]) -> None:
    """One forward pass over a collated batch of n items; files the vectors per layer at rows `local` of the shard."""
    out = encoder.forward(batch, [p.layer for p in wanted])
    for p in wanted:
        if p.layer not in out:
            raise MismatchError(f"encoder {encoder.spec!r} returned no output for layer {p.layer!r}")
        vec = out[p.layer].detach().float().cpu().numpy()  # (B, D)
        if vec.shape != (n, p.dim):
            raise MismatchError(f"encoder {encoder.spec!r} returned {vec.shape} at layer {p.layer!r}; "
                                f"expected ({n}, {p.dim}) as its layer info declares")
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
