"""Micro-batching: merge concurrent requests into one batched search, off the event loop.

Requests (*jobs*) are queued with a key — here ``(model name, decoding options)`` — and only
jobs with equal keys share a search. A worker thread takes the oldest job, waits up to
``max_wait_ms`` for more jobs with the same key (or until ``max_batch_tokens`` source tokens
are queued), runs them as one length-sorted batch and hands each job exactly its own outputs.

With ``workers > 1`` several threads take batches from the same queue, so one batch's Python
bookkeeping and small ops overlap another's matrix products (each worker gets its share of
the CPU threads: ``init_worker``). On the 2-core reference machine two workers with one torch
thread each served more requests per second than one worker with two, and more again when
each worker thread hands its batches to its own process (``serve/processes.py``, what
``mt serve`` does), so the workers stop waiting for each other's GIL (``bench/results.md``).

While the worker decodes, the event loop keeps accepting requests (and answering /health);
they queue up and form the next, larger batch, so under load batches grow by themselves and
the wait only costs latency when the server is idle.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Sequence

log = logging.getLogger(__name__)

RunBatch = Callable[[Hashable, list[str]], Sequence[Any]]
"""``run_batch(key, texts) -> outputs``, one output per text, in order (runs in the worker)."""

BatchObserver = Callable[[int, int, int, float], None]
"""``observer(texts, tokens, requests, decode_seconds)`` after each batch (for metrics)."""


class QueueFull(RuntimeError):
    """Too many requests are waiting; the caller should answer 503."""


@dataclass
class BatchResult:
    outputs: list[Any]  # one per text of the job, in the job's order
    queue_s: float  # enqueued -> its batch started
    decode_s: float  # duration of the batch it was part of
    batch_texts: int
    batch_requests: int


class _Job:
    __slots__ = ("key", "texts", "lengths", "n_tokens", "future", "loop", "enqueued", "abandoned")

    def __init__(self, key: Hashable, texts: list[str], lengths: list[int], loop: asyncio.AbstractEventLoop):
        self.key = key
        self.texts = texts
        self.lengths = lengths
        self.n_tokens = sum(lengths) + len(lengths)  # + the EOS appended to every source
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.enqueued = time.monotonic()
        self.abandoned = False  # set by the awaiting side on timeout/disconnect; read by the worker


class MicroBatcher:
    """Queue + one worker thread. Create it, then ``await submit(...)`` from the event loop.

    The worker starts on the first ``submit`` (or ``start()``); ``stop()`` fails queued jobs.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_tokens: int = 2048,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        observer: Optional[BatchObserver] = None,
        init_worker: Optional[Callable[[], None]] = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        self._run_batch = run_batch
        self.workers = workers
        self._init_worker = init_worker  # runs first in the worker thread (e.g. torch threads)
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._observer = observer
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._cond:
            if not any(t.is_alive() for t in self._threads):
                self._stopping = False
                self._threads = [
                    threading.Thread(target=self._worker, name=f"mt-batcher-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for t in self._threads:
                    t.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the running batches, fail the queued jobs, and join the workers."""
        with self._cond:
            self._stopping = True
            dropped = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job in dropped:
            self._deliver(job, RuntimeError("server is shutting down"))
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    @property
    def queued(self) -> int:
        """Requests waiting (not yet in a batch)."""
        return len(self._pending)

    # ------------------------------------------------------------------ event-loop side

    async def submit(self, key: Hashable, texts: list[str], lengths: list[int]) -> BatchResult:
        """Queue ``texts`` (with their token ``lengths``) under ``key`` and wait for the outputs.

        Cancelling the awaiting task (e.g. ``asyncio.wait_for`` timing out) abandons the job:
        if its batch has not started it is never decoded.
        """
        if len(texts) != len(lengths) or not texts:
            raise ValueError("submit needs one length per text and at least one text")
        if not self._threads:
            self.start()
        job = _Job(key, list(texts), list(lengths), asyncio.get_running_loop())
        with self._cond:
            if self._stopping:
                raise RuntimeError("server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests already queued")
            self._pending.append(job)
            self._cond.notify_all()  # every waiting worker re-checks its token budget
        try:
            return await job.future
        except asyncio.CancelledError:
            job.abandoned = True
            raise

    # ------------------------------------------------------------------ worker side

    def _worker(self) -> None:
        if self._init_worker is not None:
            self._init_worker()
        free_since = 0.0  # when this worker finished its last batch (monotonic)
        while True:
            with self._cond:
                batch = self._next_batch(free_since)
            if batch is None:
                return
            if batch:
                self._run(batch)
                free_since = time.monotonic()

    def _next_batch(self, free_since: float) -> Optional[list[_Job]]:
        """Under the lock: wait for work, then remove and return one batch (None = stop)."""
        while True:
            while not self._pending:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._pending[0]
            # wait for company from when the worker became free, not only from when the oldest
            # job arrived: under load the oldest job is always "late", and without this the
            # clients answered by the previous batch (about to send their next request) would
            # miss this one, leaving two half-size cohorts that alternate forever
            deadline = max(first.enqueued, free_since) + self.max_wait_s
            while not self._stopping and not first.abandoned:
                if not self._pending or self._pending[0] is not first:
                    break  # another worker took it
                queued = sum(j.n_tokens for j in self._pending if j.key == first.key and not j.abandoned)
                remaining = deadline - time.monotonic()
                if queued >= self.max_batch_tokens or remaining <= 0:
                    return self._take(first.key)
                self._cond.wait(remaining)
            else:
                return self._take(first.key)

    def _take(self, key: Hashable) -> list[_Job]:
        """Oldest-first jobs with ``key`` up to the token budget (at least one); the rest stay
        queued in order. Abandoned jobs are dropped."""
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        tokens = 0
        for job in self._pending:
            if job.abandoned:
                continue
            if job.key == key and (not batch or tokens + job.n_tokens <= self.max_batch_tokens):
                batch.append(job)
                tokens += job.n_tokens
            else:
                rest.append(job)
        self._pending = rest
        return batch

    def _run(self, batch: list[_Job]) -> None:
        start = time.monotonic()
        try:
            outputs = self._decode(batch)
        except Exception as e:  # noqa: BLE001 - reported to the requests, never kills the worker
            if len(batch) > 1:
                # one bad request must not fail its batch-mates: retry each alone
                log.warning("batch of %d requests failed (%s); retrying them one by one", len(batch), e)
                for job in batch:
                    self._run([job])
                return
            log.exception("decoding failed")
            self._deliver(batch[0], e)
            return
        decode_s = time.monotonic() - start
        n_texts = sum(len(j.texts) for j in batch)
        if self._observer is not None:
            self._observer(n_texts, sum(j.n_tokens for j in batch), len(batch), decode_s)
        for job, outs in zip(batch, outputs):
            self._deliver(job, BatchResult(outs, start - job.enqueued, decode_s, n_texts, len(batch)))

    def _decode(self, batch: list[_Job]) -> list[list[Any]]:
        """Run one length-sorted search over all texts of ``batch``; split outputs per job."""
        # (length, job index, text index), longest first: similar lengths end up adjacent, so
        # the decoder's own sub-batches waste little padding
        order = sorted(
            ((n, ji, ti) for ji, job in enumerate(batch) for ti, n in enumerate(job.lengths)),
            key=lambda t: -t[0],
        )
        texts = [batch[ji].texts[ti] for _, ji, ti in order]
        flat = self._run_batch(batch[0].key, texts)
        if len(flat) != len(texts):
            raise RuntimeError(f"decoder returned {len(flat)} outputs for {len(texts)} texts")
        per_job: list[list[Any]] = [[None] * len(job.texts) for job in batch]
        for out, (_, ji, ti) in zip(flat, order):
            per_job[ji][ti] = out
        return per_job

    @staticmethod
    def _deliver(job: _Job, result: Any) -> None:
        def resolve() -> None:
            if job.future.done():  # timed out / cancelled meanwhile
                return
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
