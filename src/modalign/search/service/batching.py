"""Micro-batching: concurrent requests share one model forward, on one worker thread off the event loop.

Requests put a Job in a bounded queue and await its future. The worker takes every job waiting (after
a few-ms window when the queue is short, so that near-simultaneous queries meet), runs them as ONE
forward per modality and ONE index search (`run_batch`), and hands each request its rows. A full queue
refuses new work at once (503 + Retry-After: `Overloaded`); a job whose request timed out or went away
before its turn is dropped, never run, so the server is usable again as soon as a load ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class Dropped(Exception):
    """`run_batch` found every request of its batch gone (timed out) before it finished: nothing to send."""


class Overloaded(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Job:
    modality: str  # "text" | "image"
    items: list[Any]  # texts, or decoded (H, W, 3) uint8 images
    k: int  # top-k hits to search; 0: embeddings only
    cost: int  # text characters (texts) or images: what the queue caps count
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)
    cancelled: bool = False  # the request timed out or went away: drop the job if it has not started
    queued_at: float = field(default_factory=time.monotonic)
    timing: dict[str, float] = field(default_factory=dict)  # ms: queue, encode, search (Server-Timing)


# run_batch(jobs) -> one result per job, in order (e.g. (vectors (n, d), hits per item))
BatchRunner = Callable[[Sequence[Job]], list[Any]]


class MicroBatcher:
    def __init__(self, run_batch: BatchRunner, window_s: float, max_items: int, max_chars: int,
                 max_queued_chars: int, max_queued_images: int):
        self.run_batch = run_batch
        self.window_s, self.max_items, self.max_chars = window_s, max_items, max_chars
        self.caps = {"text": max_queued_chars, "image": max_queued_images}
        self.queued = {"text": 0, "image": 0}  # cost waiting, per modality
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._rate = {"text": 2000.0, "image": 20.0}  # cost per second, a running estimate for Retry-After
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="modalign-model", daemon=True)
        self._thread.start()
        self.batches = self.dropped = 0  # counters for /ready

    def retry_after(self, modality: str = "text") -> int:
        """Seconds until the queue has drained, at the measured rate (at least 1)."""
        return max(1, math.ceil(self.queued[modality] / max(self._rate[modality], 1e-6)))

    async def submit(self, modality: str, items: list[Any], k: int, cost: int) -> tuple[Any, dict[str, float]]:
        """Queues the work and waits for it: (run_batch's result for it, its timing in ms)."""
        loop = asyncio.get_running_loop()
        job = Job(modality, items, k, cost, loop, loop.create_future())
        with self._cond:
            if self.queued[modality] + cost > self.caps[modality] and self.queued[modality] > 0:
                raise Overloaded(f"the server is busy ({self.queued[modality]} {modality} units queued); "
                                 f"retry in {self.retry_after(modality)} s", self.retry_after(modality))
            self.queued[modality] += cost
            self._jobs.append(job)
            self._cond.notify()
        try:
            return await job.future, job.timing
        except asyncio.CancelledError:
            job.cancelled = True  # the worker skips it; its cost leaves the queue when it is taken out
            raise

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # ---- the worker thread ----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._jobs and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            end = self._jobs[0].queued_at + self.window_s  # the oldest job waits at most the window
            while len(self._jobs) < self.max_items and not self._stop and (left := end - time.monotonic()) > 0:
                self._cond.wait(left)  # a short window: let near-simultaneous queries share the forward
            return self._take()

    def _take(self) -> list[Job]:
        """Jobs of the first waiting job's modality, up to the per-forward caps; cancelled ones dropped."""
        batch: list[Job] = []
        items = chars = 0
        modality = self._jobs[0].modality
        rest: deque[Job] = deque()
        while self._jobs:
            job = self._jobs.popleft()
            if job.cancelled or job.future.done():
                self.queued[job.modality] -= job.cost
                self.dropped += 1
                continue
            fits = job.modality == modality and (not batch or (items + len(job.items) <= self.max_items
                                                               and chars + job.cost <= self.max_chars))
            if not fits:
                rest.append(job)
                continue
            batch.append(job)
            job.timing["queue"] = 1000 * (time.monotonic() - job.queued_at)
            items, chars = items + len(job.items), chars + (job.cost if modality == "text" else 0)
            self.queued[job.modality] -= job.cost
        self._jobs = rest
        return batch

    def _run(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            results = self.run_batch(batch)
        except Dropped:
            self.dropped += len(batch)
            return
        except Exception as e:  # noqa: BLE001 - every request of the batch gets the error, the worker lives on
            logger.exception("a batch of %d requests failed", len(batch))
            for job in batch:
                _deliver(job, None, e)
            return
        seconds = max(time.perf_counter() - t0, 1e-6)
        cost = sum(j.cost for j in batch)
        modality = batch[0].modality
        self._rate[modality] = 0.8 * self._rate[modality] + 0.2 * (cost / seconds)
        self.batches += 1
        for job, result in zip(batch, results, strict=True):
            _deliver(job, result, None)


def _deliver(job: Job, result: Any, error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # its event loop has closed (the server stopped): nobody waits
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
