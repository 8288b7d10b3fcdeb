"""Lookups under load: admission with a bounded queue, and micro-batching of concurrent requests into one model call.

Inference is the expensive part of a lookup, and one ONNX Runtime call on a
batch of 8 images costs less than 8 calls on one. Requests queued together
(up to `max_batch` images) share one call, and a batch waits up to
`batch_wait_ms` for requests already admitted but still being read or
decoded, never for requests that may or may not come: a lone client pays no
wait. Past `max_queue` admitted requests the next one is refused at once
(503, Retry-After) instead of waiting without bound.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import anyio.to_thread
import numpy as np

from snapmatch.sdk.types import Match
from snapmatch.serve.errors import HTTPProblem
from snapmatch.serve.metrics import Metrics
from snapmatch.serve.uploads import Limits

RETRY_AFTER_S = 1


class Gate:
    """At most `limit` requests of one kind inside the server at once; the next is refused now (503, Retry-After)."""

    def __init__(self, limit: int, metrics: Metrics, kind: str, gauge=None) -> None:
        self.limit, self.metrics, self.kind, self.gauge = limit, metrics, kind, gauge
        self.inside = 0
        self._lock = threading.Lock()

    @contextmanager
    def enter(self) -> Iterator[None]:
        with self._lock:
            if self.inside >= self.limit:
                self.metrics.rejected.labels(reason=f"{self.kind}_queue_full").inc()
                raise HTTPProblem(503, "Overloaded", f"{self.inside} {self.kind}s are already in progress (the "
                                  "limit): try again shortly", {"Retry-After": str(RETRY_AFTER_S)})
            self.inside += 1
            self._show()
        try:
            yield
        finally:
            with self._lock:
                self.inside -= 1
                self._show()

    def _show(self) -> None:
        if self.gauge is not None:
            self.gauge.set(self.inside)


@dataclass
class Ticket:
    """An admitted lookup request; `incoming` until its images reach the queue."""

    incoming: bool = True


@dataclass
class _Job:
    inputs: list[np.ndarray]
    k: int
    future: Future


class LookupQueue:
    """Embeds preprocessed images and searches the catalog, batching concurrent requests (one worker thread)."""

    def __init__(self, search, limits: Limits, metrics: Metrics) -> None:
        self.search = search
        self.limits = limits
        self.metrics = metrics
        self.gate = Gate(limits.max_queue, metrics, "lookup", gauge=metrics.queue_depth)
        self._incoming = 0  # admitted requests whose images are not queued yet: company worth waiting for
        self._jobs: collections.deque[_Job] = collections.deque()
        self._wakeup = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None
        if limits.max_batch > 1:
            self._worker = threading.Thread(target=self._serve, name="snapmatch-batcher", daemon=True)
            self._worker.start()

    @property
    def batching(self) -> bool:
        return self._worker is not None

    @contextmanager
    def admit(self) -> Iterator[Ticket]:
        """Hold one of max_queue places for a lookup request, or refuse it now (503)."""
        if self._closed:
            raise HTTPProblem(503, "ShuttingDown", "the server is shutting down", {"Retry-After": str(RETRY_AFTER_S)})
        with self.gate.enter():
            ticket = Ticket()
            with self._wakeup:
                self._incoming += 1
            try:
                yield ticket
            finally:
                self._arrived(ticket)

    def _arrived(self, ticket: Ticket) -> None:
        """The request's images are queued (or it failed before): a waiting batch stops counting on it."""
        with self._wakeup:
            if ticket.incoming:
                ticket.incoming = False
                self._incoming -= 1
                self._wakeup.notify_all()

    async def lookup(self, ticket: Ticket, inputs: list[np.ndarray], k: int) -> list[list[Match]]:
        """The k best matches of each preprocessed image, through a shared batch (or on its own when batching is off)."""
        if not self.batching:
            self._arrived(ticket)
            return await anyio.to_thread.run_sync(self._run_alone, inputs, k)
        job = _Job(inputs, k, Future())
        with self._wakeup:
            if self._closed:
                raise HTTPProblem(503, "ShuttingDown", "the server is shutting down", {"Retry-After": str(RETRY_AFTER_S)})
            self._jobs.append(job)
            self._arrived(ticket)  # the condition's lock is reentrant
        return await asyncio.wrap_future(job.future)

    def _run_alone(self, inputs: list[np.ndarray], k: int) -> list[list[Match]]:
        self.metrics.batch_images.observe(len(inputs))
        return self.search.catalog.search(self.search.embedder.embed_preprocessed(inputs), k)

    def _serve(self) -> None:
        while True:
            jobs = self._next_batch()
            if jobs is None:
                return
            self._run(jobs)

    def _next_batch(self) -> list[_Job] | None:
        """The jobs of the next model call: the oldest, those queued, and those admitted that join within the wait
        (up to max_batch images)."""
        wait = self.limits.batch_wait_ms / 1000.0
        with self._wakeup:
            while not self._jobs:
                if self._closed:
                    return None
                self._wakeup.wait()
            jobs = [self._jobs.popleft()]
            size = len(jobs[0].inputs)
            deadline = time.monotonic() + wait
            while size < self.limits.max_batch:
                if self._jobs:
                    if size + len(self._jobs[0].inputs) > self.limits.max_batch:
                        break
                    jobs.append(self._jobs.popleft())
                    size += len(jobs[-1].inputs)
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closed or self._incoming == 0:
                    break
                self._wakeup.wait(left)
        return jobs

    def _run(self, jobs: list[_Job]) -> None:
        # A request cancelled while it waited (its client went, a shutdown timeout) is dropped here;
        # from now on the others' futures cannot be cancelled under us.
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        inputs = [image for job in jobs for image in job.inputs]
        self.metrics.batch_images.observe(len(inputs))
        try:
            vectors = self.search.embedder.embed_batch(np.stack(inputs))  # one model call for the batch
            starts = np.cumsum([0] + [len(job.inputs) for job in jobs])
            # One search per distinct k: a result never depends on what else shared its batch.
            for k in sorted({job.k for job in jobs}):
                mine = [i for i, job in enumerate(jobs) if job.k == k]
                rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in mine])
                results = self.search.catalog.search(vectors[rows], k)
                offset = 0
                for i in mine:
                    count = len(jobs[i].inputs)
                    jobs[i].future.set_result(results[offset:offset + count])
                    offset += count
        except Exception as exc:  # noqa: BLE001  every waiting request gets the error; the worker keeps serving
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)

    def close(self) -> None:
        """Refuse new lookups, answer those queued, and stop the worker."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()
        if self._worker is not None:
            self._worker.join()
