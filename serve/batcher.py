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

**Sharing with free workers.** A worker that takes a batch while other workers are free takes
only its share of the queued source tokens (the queue split evenly between the free workers;
a single text is never split), and the free workers take the rest at once. Otherwise, with
closed-loop clients, one worker would decode all 8 requests of 8 clients while the other
waited, batch after batch; a request of several sentences is likewise decoded on two cores.

**Fairness.** A batch holds at most ``max_batch_tokens`` source tokens and ``max_batch_cost``
decoder row-steps (each text's cost comes with the job: beam × maximum output length,
``ModelEngine.text_costs``). A job too big for one batch is decoded in *chunks* (its texts,
longest first; a single text is never split); after each chunk the job goes to the back of
the queue, so jobs queued meanwhile run before its next chunk (round-robin). A small request
therefore waits for at most one chunk per big request ahead of it, not for whole big requests.
With several workers, while small jobs keep arriving (one in the last ``RESERVE_S``), chunks
of big jobs run on all workers but one: a small job never waits for a chunk to end; and while
the decoder runs short-handed (``paused()``: a dead decoding process's replacement is loading)
no chunk starts, and running ones stop and queue again (*preemption*), so the decoders left
serve the small jobs.

**Cancellation.** A job whose caller stopped waiting (timeout, client gone) is *abandoned*:
its queued texts are never decoded, and ``run_batch`` gets a ``should_stop`` callable that is
True once every job of the running batch is abandoned, so the search stops at its next step
(``mt.decode.search``). A batch with one live job runs to the end.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Sequence

log = logging.getLogger(__name__)

StopCheck = Callable[[], bool]
RunBatch = Callable[..., Sequence[Any]]
"""``run_batch(key, texts[, should_stop]) -> outputs``, one output per text, in order (runs in
a worker). ``should_stop()``: True when nobody waits for the batch any more; a run_batch that
accepts it (a third parameter or a ``should_stop`` keyword) should stop early and raise."""

RESERVE_S = 1.0
"""With several workers, one is kept from big jobs' chunks while a small job (one that fits a
batch) has arrived within this many seconds."""

BatchObserver = Callable[[int, int, int, float], None]
"""``observer(texts, tokens, requests, decode_seconds)`` after each batch (for metrics)."""


class QueueFull(RuntimeError):
    """Too many requests are waiting; the caller should answer 503."""


class Unavailable(RuntimeError):
    """No decoder can take the batch now (e.g. every decoding process failed); answer 503."""


@dataclass
class BatchResult:
    outputs: list[Any]  # one per text of the job, in the job's order
    queue_s: float  # enqueued -> its first batch started
    decode_s: float  # duration of the batch it was part of (summed over its chunks)
    batch_texts: int  # texts in its (largest) batch
    batch_requests: int  # requests in its (largest) batch


class _Job:
    """One ``submit``: its texts, what is left to decode, and what came back. ``todo`` (text
    indices not yet in a batch, longest first) and the results are changed under the
    batcher's lock; ``abandoned`` is set by the awaiting side, ``failed`` by a worker."""

    __slots__ = ("key", "texts", "lengths", "costs", "future", "loop", "enqueued", "abandoned", "failed",
                 "todo", "todo_tokens", "todo_cost", "outputs", "left", "started", "decode_s", "batch_texts",
                 "batch_requests", "big")

    def __init__(self, key: Hashable, texts: list[str], lengths: list[int], costs: list[int],
                 loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        self.key, self.texts, self.lengths, self.costs, self.loop = key, texts, lengths, costs, loop
        self.future: asyncio.Future = loop.create_future()
        self.enqueued = time.monotonic()
        self.abandoned = False  # set by the awaiting side on timeout/disconnect; read by the workers
        self.failed = False  # an error was delivered: its other chunks need not run
        self.todo = sorted(range(len(texts)), key=lambda i: -lengths[i])  # similar lengths chunk together
        self.todo_tokens = sum(lengths) + len(lengths)  # + the EOS appended to every source
        self.todo_cost = sum(costs)
        self.outputs: list[Any] = [None] * len(texts)
        self.left = len(texts)  # outputs not yet back
        self.started: Optional[float] = None
        self.decode_s, self.batch_texts, self.batch_requests = 0.0, 0, 0
        self.big = False  # more than one batch's worth: decoded in chunks (set by the batcher)

    @property
    def dead(self) -> bool:
        """Nobody needs its outputs any more."""
        return self.abandoned or self.failed


@dataclass
class _Piece:
    """The texts ``idx`` of ``job`` that one batch decodes."""

    job: _Job
    idx: list[int]


def _accepts_should_stop(fn: Callable[..., Any]) -> bool:
    """Whether ``fn(key, texts, should_stop)`` is a valid call."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind("key", [], lambda: False)
    except TypeError:
        return False
    return True


class MicroBatcher:
    """Queue + worker threads. Create it, then ``await submit(...)`` from the event loop.

    The workers start on the first ``submit`` (or ``start()``); ``stop()`` fails queued jobs.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_tokens: int = 2048,
        max_batch_cost: Optional[int] = None,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        observer: Optional[BatchObserver] = None,
        init_worker: Optional[Callable[[], None]] = None,
        workers: int = 1,
        paused: Optional[Callable[[], bool]] = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        self._run_batch = run_batch
        self._pass_stop = _accepts_should_stop(run_batch)
        self.workers = workers
        self._init_worker = init_worker  # runs first in the worker thread (e.g. torch threads)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_cost = max_batch_cost  # None: batches are bounded by tokens only
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._observer = observer
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._cancel_running = False  # stop(cancel=True): running searches stop at their next step
        self._big_running = 0  # batches with chunks of big jobs being decoded
        self._paused = paused  # True: fewer decoders than workers for a while (DecodeProcesses.replacing)
        self._last_small = float("-inf")  # when the last small job arrived (monotonic)
        self._free = 0  # workers waiting for work in _next_batch (not decoding)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._cond:
            if not any(t.is_alive() for t in self._threads):
                self._stopping = self._cancel_running = False
                self._threads = [
                    threading.Thread(target=self._worker, name=f"mt-batcher-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for t in self._threads:
                    t.start()

    def stop(self, timeout: float = 10.0, cancel: bool = False) -> None:
        """Fail the queued jobs, finish the running batches (``cancel``: stop them at their
        next decoding step, failing their jobs) and join the workers (``timeout`` each)."""
        with self._cond:
            self._stopping = True
            self._cancel_running = cancel
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
        """Requests waiting (not yet in a batch, or with chunks still to decode)."""
        return len(self._pending)

    # ------------------------------------------------------------------ event-loop side

    async def submit(self, key: Hashable, texts: list[str], lengths: list[int],
                     costs: Optional[list[int]] = None) -> BatchResult:  # fmt: skip
        """Queue ``texts`` (with their token ``lengths`` and decoding ``costs``, e.g. row-steps;
        None: no cost) under ``key`` and wait for the outputs.

        Cancelling the awaiting task (e.g. ``asyncio.wait_for`` timing out) abandons the job:
        its texts not yet in a batch are never decoded, and a running batch of abandoned jobs
        only is told to stop.
        """
        costs = [0] * len(texts) if costs is None else list(costs)
        if len(texts) != len(lengths) or len(texts) != len(costs) or not texts:
            raise ValueError("submit needs one length (and cost) per text and at least one text")
        if not self._threads:
            self.start()
        job = _Job(key, list(texts), list(lengths), costs, asyncio.get_running_loop())
        job.big = job.todo_tokens > self.max_batch_tokens or (
            self.max_batch_cost is not None and job.todo_cost > self.max_batch_cost)
        with self._cond:
            if not job.big:
                self._last_small = job.enqueued
            if self._stopping:
                raise RuntimeError("server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests already queued")
            self._pending.append(job)
            self._cond.notify_all()  # every waiting worker re-checks its budget
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
                self._free += 1
                try:
                    batch = self._next_batch(free_since)
                finally:
                    self._free -= 1
            if batch is None:
                return
            if batch:
                try:
                    self._run(batch)
                finally:
                    if any(p.job.big for p in batch):
                        with self._cond:
                            self._big_running -= 1
                            self._cond.notify_all()  # a worker held back from big jobs may take one now
                free_since = time.monotonic()

    def _full(self, tokens: int, cost: int, token_limit: Optional[int] = None) -> bool:
        """Whether a batch of ``tokens`` source tokens and ``cost`` has reached a budget
        (``token_limit``: the source-token budget, ``max_batch_tokens`` if None)."""
        limit = self.max_batch_tokens if token_limit is None else token_limit
        return tokens >= limit or (self.max_batch_cost is not None and cost >= self.max_batch_cost)

    def _share(self, key: Hashable) -> int:
        """The source-token budget of the batch a worker takes now (under the lock): the
        queued tokens of ``key`` split evenly between the free workers (this one included),
        so none of them stays idle while another decodes everything."""
        if self._free <= 1 or (self._paused is not None and self._paused()):
            return self.max_batch_tokens
        queued = sum(j.todo_tokens for j in self._pending if j.key == key and not j.dead)
        return max(1, min(self.max_batch_tokens, -(-queued // self._free)))

    def _reserved(self) -> bool:
        """Whether this worker must leave big jobs alone (under the lock): the others are all
        decoding chunks of big jobs, and small jobs are arriving."""
        if self.workers == 1 or time.monotonic() - self._last_small >= RESERVE_S:
            return False
        return self._big_running >= self.workers - 1 or (self._paused is not None and self._paused())

    def _eligible(self) -> Optional[_Job]:
        """The job to serve next (under the lock): the oldest live one, skipping big ones
        while :meth:`_reserved`; None when there is none."""
        reserved = self._reserved()
        return next((j for j in self._pending if not j.dead and not (reserved and j.big)), None)

    def _next_batch(self, free_since: float) -> Optional[list[_Piece]]:
        """Under the lock: wait for work, then remove and return one batch (None = stop)."""
        while True:
            while not self._pending:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._eligible()
            if first is None:  # dead jobs only (dropped by _take), or big ones while reserved
                if self._pending and all(j.dead for j in self._pending):
                    return self._take(None, False, self.max_batch_tokens)
                # re-check when the small jobs may have stopped, or soon if the decoders are short-handed
                self._cond.wait(min(0.1, max(0.001, self._last_small + RESERVE_S - time.monotonic())))
                continue
            # wait for company from when the worker became free, not only from when the oldest
            # job arrived: under load the oldest job is always "late", and without this the
            # clients answered by the previous batch (about to send their next request) would
            # miss this one, leaving two half-size cohorts that alternate forever
            deadline = max(first.enqueued, free_since) + self.max_wait_s
            while not self._stopping and not first.dead:
                if not first.todo or self._eligible() is not first:
                    break  # another worker took it, or it is not next any more
                same = [j for j in self._pending if j.key == first.key and not j.dead]
                full = self._full(sum(j.todo_tokens for j in same), sum(j.todo_cost for j in same))
                remaining = deadline - time.monotonic()
                if full or remaining <= 0:
                    return self._take(first.key, not self._reserved(), self._share(first.key))
                self._cond.wait(remaining)
            else:
                return self._take(first.key, not self._reserved(), self._share(first.key))

    def _take(self, key: Hashable, big: bool, token_limit: int) -> list[_Piece]:
        """Oldest-first texts of jobs with ``key`` (big ones only if ``big``) up to
        ``token_limit`` source tokens and the cost budget (at least one text). A job that keeps
        texts for later goes to the back of the queue (round-robin between big jobs and the
        jobs queued behind them); the others keep their order. Dead jobs are dropped."""
        batch: list[_Piece] = []
        rest: deque[_Job] = deque()
        again: list[_Job] = []
        tokens = cost = 0
        for job in self._pending:
            if job.dead:
                continue
            idx: list[int] = []
            if job.key == key and (big or not job.big) and not self._full(tokens, cost, token_limit):
                while job.todo:
                    i = job.todo[0]
                    t, c = job.lengths[i] + 1, job.costs[i]
                    if (batch or idx) and (tokens + t > token_limit or
                                           (self.max_batch_cost is not None and cost + c > self.max_batch_cost)):
                        break
                    idx.append(job.todo.pop(0))
                    tokens, cost = tokens + t, cost + c
                    job.todo_tokens, job.todo_cost = job.todo_tokens - t, job.todo_cost - c
            if idx:
                batch.append(_Piece(job, idx))
                if job.todo:
                    again.append(job)
            else:
                rest.append(job)
        rest.extend(again)
        self._pending = rest
        if any(p.job.big for p in batch):
            self._big_running += 1  # until the worker has run it (_worker)
        if self._pending and self._free > 1:
            self._cond.notify_all()  # the other free workers take the rest now
        return batch

    def _run(self, batch: list[_Piece]) -> None:
        start = time.monotonic()
        preempted = [False]
        try:
            outputs = self._decode(batch, preempted)
        except Exception as e:  # noqa: BLE001 - reported to the requests, never kills the worker
            if preempted[0]:
                self._requeue(batch)
            else:
                self._failed(batch, e)
            return
        decode_s = time.monotonic() - start
        n_texts = sum(len(p.idx) for p in batch)
        if self._observer is not None:
            self._observer(n_texts, sum(p.job.lengths[i] + 1 for p in batch for i in p.idx), len(batch), decode_s)
        done: list[_Job] = []
        with self._cond:
            for piece, outs in zip(batch, outputs):
                job = piece.job
                for i, out in zip(piece.idx, outs):
                    job.outputs[i] = out
                job.left -= len(piece.idx)
                job.started = start if job.started is None else min(job.started, start)
                job.decode_s += decode_s
                job.batch_texts, job.batch_requests = max(job.batch_texts, n_texts), max(job.batch_requests, len(batch))
                if job.left == 0 and not job.dead:
                    done.append(job)
        for job in done:
            self._deliver(job, BatchResult(job.outputs, job.started - job.enqueued, job.decode_s,
                                           job.batch_texts, job.batch_requests))

    def _failed(self, batch: list[_Piece], error: Exception) -> None:
        """A batch raised ``error``: nothing to do when nobody waits (a cancelled search);
        at shutdown fail every job; else retry each piece alone, so one bad request does not
        fail its batch-mates, and fail the job of a piece that fails alone."""
        live = [p for p in batch if not p.job.dead]
        if not live:
            log.info("stopped a batch of %d abandoned request(s) (%s)", len(batch), type(error).__name__)
            return
        if self._cancel_running:
            for p in live:
                self._fail(p.job, RuntimeError("server is shutting down"))
            return
        if len(batch) > 1:
            log.warning("batch of %d requests failed (%s); retrying them one by one", len(batch), error)
            for p in live:
                self._run([p])
            return
        log.error("decoding failed: %s", error, exc_info=None if isinstance(error, Unavailable) else error)
        self._fail(live[0].job, error)

    def _requeue(self, batch: list[_Piece]) -> None:
        """Put the texts of a preempted batch back into their jobs, which queue again."""
        with self._cond:
            for p in batch:
                job = p.job
                if job.dead:
                    continue
                job.todo = sorted(p.idx + job.todo, key=lambda i: -job.lengths[i])
                job.todo_tokens += sum(job.lengths[i] + 1 for i in p.idx)
                job.todo_cost += sum(job.costs[i] for i in p.idx)
                if all(j is not job for j in self._pending):
                    self._pending.append(job)
            self._cond.notify_all()
        log.info("preempted a chunk of %d big request(s): the decoders are short-handed", len(batch))

    def _fail(self, job: _Job, error: BaseException) -> None:
        job.failed = True  # its chunks still queued are dropped, running ones stop
        self._deliver(job, error)

    def _preempt(self) -> bool:
        """Whether a running chunk of big jobs should give way: the decoders are short-handed
        (a replacement is loading) and small jobs are arriving. Read without the lock."""
        return (self._paused is not None and time.monotonic() - self._last_small < RESERVE_S
                and self._paused())

    def _decode(self, batch: list[_Piece], preempted: list[bool]) -> list[list[Any]]:
        """Run one length-sorted search over all texts of ``batch``; outputs per piece, in
        the order of its ``idx``. ``preempted[0]`` becomes True when its ``should_stop``
        stopped a chunk of big jobs for :meth:`_preempt` (its texts are then queued again)."""
        # (length, piece, position in piece), longest first: similar lengths end up adjacent,
        # so the decoder's own sub-batches waste little padding
        order = sorted(((p.job.lengths[i], pi, k) for pi, p in enumerate(batch) for k, i in enumerate(p.idx)),
                       key=lambda t: -t[0])
        texts = [batch[pi].job.texts[batch[pi].idx[k]] for _, pi, k in order]
        key = batch[0].job.key
        if self._pass_stop:
            # one Python call per decoding step: cheap, and read without the lock (flags only go
            # from False to True)
            only_big = all(p.job.big for p in batch)

            def should_stop() -> bool:
                if self._cancel_running or all(p.job.dead for p in batch):
                    return True
                if only_big and self._preempt():
                    preempted[0] = True
                    return True
                return False

            flat = self._run_batch(key, texts, should_stop)
        else:
            flat = self._run_batch(key, texts)
        if len(flat) != len(texts):
            raise RuntimeError(f"decoder returned {len(flat)} outputs for {len(texts)} texts")
        per_piece: list[list[Any]] = [[None] * len(p.idx) for p in batch]
        for out, (_, pi, k) in zip(flat, order):
            per_piece[pi][k] = out
        return per_piece

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
