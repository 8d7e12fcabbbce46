"""The model and index work of a micro-batch: one encoder forward for all its items (in chunks of at
most `max_chars` text characters / `max_items` items, so one forward takes bounded time), one index
search for all its queries. Runs on the batcher's worker thread (batching.py); when every request of
the batch has gone (timed out) between two chunks, the rest is not computed."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from modalign.search.service.batching import Dropped, Job

logger = logging.getLogger(__name__)


class Encodes(Protocol):
    towers: dict[str, Any]

    def encode(self, modality: str, items: Sequence[Any], batch_size: int = 32) -> Any: ...


class Searches(Protocol):
    def search(self, queries: np.ndarray, k: int = 10, rerank: Any = None) -> list[list[Any]]: ...


class Engine:
    def __init__(self, model: Encodes, index: Searches, reranker: Any = None, max_chars: int = 8192,
                 max_items: int = 128):
        self.model, self.index, self.reranker = model, index, reranker
        self.max_chars, self.max_items = max_chars, max_items

    def encode(self, jobs: Sequence[Job]) -> np.ndarray:
        """(n, d) vectors of every item of the jobs, in order, a bounded chunk per forward."""
        modality = jobs[0].modality
        items = [x for job in jobs for x in job.items]
        parts, start = [], 0
        while start < len(items):
            if all(job.cancelled for job in jobs):
                raise Dropped()
            end, chars = start + 1, len(items[start]) if modality == "text" else 0
            while end < len(items) and end - start < self.max_items and (
                    modality != "text" or chars + len(items[end]) <= self.max_chars):
                chars += len(items[end]) if modality == "text" else 0
                end += 1
            chunk = items[start:end]
            parts.append(self.model.encode(modality, chunk, batch_size=len(chunk)).cpu().numpy())
            start = end
        return np.concatenate(parts)

    def run(self, jobs: Sequence[Job]) -> list[tuple[np.ndarray, list[list[Any]] | None]]:
        """Jobs of one modality -> per job (its vectors (n, d), its hits per item or None when k = 0)."""
        t0 = time.perf_counter()
        vectors = self.encode(jobs)  # (n, d)
        t1 = time.perf_counter()
        bounds = np.cumsum([0, *(len(job.items) for job in jobs)])
        searching = [i for i, job in enumerate(jobs) if job.k > 0]
        hits: dict[int, list[list[Any]]] = {}
        if searching:
            rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in searching])
            found = self.index.search(vectors[rows], max(jobs[i].k for i in searching), rerank=self.reranker)
            at = 0
            for i in searching:
                n = len(jobs[i].items)
                hits[i] = [h[:jobs[i].k] for h in found[at:at + n]]
                at += n
        t2 = time.perf_counter()
        for job in jobs:
            job.timing.update(encode=1000 * (t1 - t0), search=1000 * (t2 - t1))
        return [(vectors[bounds[i]:bounds[i + 1]], hits.get(i)) for i in range(len(jobs))]
