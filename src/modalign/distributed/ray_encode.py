"""Encode one column into an EmbeddingStore with Ray workers: shards spread over a cluster, one store entry.

    from modalign.distributed.ray_encode import encode_on_ray
    out = encode_on_ray(store, dataset.column("image"), "effnet-lite0", ["final"], num_workers=4)

The driver plans exactly as `EmbeddingStore.encode` does (it holds the entry locks, finds the complete
shards, writes the unfinished manifest), hands each Ray actor a share of the missing shard indices, and
finishes the entries (valid.npy, skipped.json, complete manifest) once every actor is done. Each actor
builds the encoder once and runs the store's own encode loop (store.pipeline.encode_shards) on its
shards, so shards are written atomically by the same code and hold the same vectors a one-process run
computes. The store root must be a folder every worker can write (local disk on one machine, a shared
file system on a cluster). A run killed part-way leaves whole shards; running it again computes only
the missing ones. Needs the `ray` extra (pip install "modalign[ray]").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modalign.errors import ConfigError

if TYPE_CHECKING:
    from modalign.data.column import Column
    from modalign.store.embeddings import StoredEmbeddings
    from modalign.store.store import EmbeddingStore

logger = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError('encode_on_ray needs Ray: pip install "modalign[ray]" (or "ray[data]")') from e
    return ray


class _ShardWorker:
    """One Ray actor: builds the encoder once, then encodes whatever shards it is given."""

    def __init__(self, encoder_spec: str, device: str, torch_threads: int | None):
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        from modalign.encoders import create_encoder

        self.encoder = create_encoder(encoder_spec, device=device)

    def encode(self, ids: Sequence[str], items: Sequence[Any], layout: Any, pending: list[Any],
               shards: list[int], load_workers: int) -> dict[str, int]:
        """Writes shards `shards` of each pending entry; returns {layer: shards written}."""
        from dataclasses import replace

        from modalign.store.encode_plan import encode_shards

        mine = set(shards)
        share = [replace(p, todo=p.todo & mine, written=0) for p in pending]  # reusable rows travel along
        share = [p for p in share if p.todo]
        encode_shards(ids, items, self.encoder, layout, share, num_workers=load_workers, progress=False,
                      desc=f"ray encode {self.encoder.spec}")
        return {p.layer: p.written for p in share}


def split_shards(shards: Sequence[int], n: int) -> list[list[int]]:
    """Round-robin split of shard indices over `n` workers (empty parts dropped)."""
    parts = [list(shards[i::n]) for i in range(n)]
    return [p for p in parts if p]


def encode_on_ray(store: EmbeddingStore, column: Column, encoder_spec: str,
                  layers: Sequence[str] | str | None = None, num_workers: int = 2, *, dtype: str = "float32",
                  batch_size: int = 32, shard_size: int = 256, load_workers: int = 0, device: str = "cpu",
                  cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                  torch_threads: int | None = 1) -> dict[str, StoredEmbeddings]:
    """Like `store.encode(column, create_encoder(encoder_spec), layers, ...)`, with the shards computed by
    `num_workers` Ray actors (ray.init() is called with defaults when Ray is not initialised yet).

    Returns {layer: StoredEmbeddings}; each report counts the shards reused and written by this run.
    """
    from modalign.encoders import create_encoder

    ray = _ray()
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    encoder = create_encoder(encoder_spec, device="cpu")  # the driver's copy: keys and layer sizes only
    # the driver owns the entries (locks, manifests); workers write shards only
    with store.plan_encode(column, encoder, layers, dtype=dtype, batch_size=batch_size, shard_size=shard_size,
                           num_workers=load_workers) as plan:
        shards = sorted(set().union(*(p.todo for p in plan.pending))) if plan.pending else []
        written: dict[str, int] = {p.layer: 0 for p in plan.pending}
        if shards:
            if not ray.is_initialized():
                ray.init()
            parts = split_shards(shards, num_workers)
            logger.info("encoding %d shard(s) of %s on %d Ray worker(s)", len(shards), encoder_spec, len(parts))
            actor = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(_ShardWorker)
            workers = [actor.remote(encoder_spec, device, torch_threads) for _ in parts]
            ids_ref, items_ref = ray.put(list(column.ids)), ray.put(list(column.items))
            try:
                results = ray.get([w.encode.remote(ids_ref, items_ref, plan.layout, plan.pending, part, load_workers)
                                   for w, part in zip(workers, parts, strict=True)])
            finally:
                for w in workers:
                    ray.kill(w)
            for res in results:
                for layer, n in res.items():
                    written[layer] += n
        return store.complete(plan, written)
