"""MicroBatcher: merging, grouping by key, exact split-back, budgets, failures, timeouts."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from serve.batcher import MicroBatcher, QueueFull


class Recorder:
    """run_batch double: records each call; output = text + '!' (after an optional delay)."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[object, list[str]]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, key, texts):
        with self.lock:
            self.calls.append((key, list(texts)))
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise ValueError("poisoned text")
        time.sleep(self.delay)
        return [f"{key}:{t}!" for t in texts]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_jobs_are_merged_and_each_gets_exactly_its_outputs():
    rec = Recorder(delay=0.02)
    batcher = MicroBatcher(rec, max_batch_tokens=10_000, max_wait_ms=20)
    rng = random.Random(0)
    jobs = []
    for j in range(60):
        texts = [f"job{j}-text{i}-" + "x" * rng.randint(0, 30) for i in range(rng.randint(1, 4))]
        jobs.append(texts)

    async def main():
        return await asyncio.gather(*(batcher.submit("m", t, [len(s) for s in t]) for t in jobs))

    try:
        results = run(main())
    finally:
        batcher.stop()
    for texts, res in zip(jobs, results):
        assert res.outputs == [f"m:{t}!" for t in texts]
        assert res.batch_texts >= len(texts)
    assert len(rec.calls) < len(jobs) / 4, "concurrent requests were not merged"
    assert max(r.batch_requests for r in results) > 1
    for _, texts in rec.calls:  # each search is length-sorted, longest first
        assert [len(t) for t in texts] == sorted((len(t) for t in texts), reverse=True)


def test_only_equal_keys_share_a_batch():
    rec = Recorder(delay=0.01)
    batcher = MicroBatcher(rec, max_wait_ms=20)

    async def main():
        coros = [batcher.submit(("m", i % 3), [f"k{i % 3}-{i}"], [3]) for i in range(30)]
        return await asyncio.gather(*coros)

    try:
        results = run(main())
    finally:
        batcher.stop()
    for i, res in enumerate(results):
        assert res.outputs == [f"('m', {i % 3}):k{i % 3}-{i}!"]
    for key, texts in rec.calls:
        assert {t.split("-")[0] for t in texts} == {f"k{key[1]}"}
    assert len(rec.calls) < 30


def test_token_budget_bounds_each_batch_but_never_starves_a_big_job():
    rec = Recorder(delay=0.01)
    batcher = MicroBatcher(rec, max_batch_tokens=10, max_wait_ms=30)

    async def main():
        small = [batcher.submit("m", [f"s{i}"], [3]) for i in range(12)]  # 4 tokens each (EOS counted)
        big = batcher.submit("m", ["big"], [50])  # over budget on its own: runs alone
        return await asyncio.gather(*small, big)

    try:
        results = run(main())
    finally:
        batcher.stop()
    assert results[-1].outputs == ["m:big!"] and results[-1].batch_requests == 1
    for _, texts in rec.calls:
        if texts != ["big"]:
            assert len(texts) <= 2  # 2 * 4 tokens <= 10 < 3 * 4


def test_a_failing_request_does_not_fail_its_batch_mates():
    rec = Recorder(delay=0.01, fail_on="poison")
    batcher = MicroBatcher(rec, max_wait_ms=30)

    async def main():
        coros = [batcher.submit("m", [f"ok{i}"], [2]) for i in range(5)]
        coros.insert(2, batcher.submit("m", ["poison"], [2]))
        return await asyncio.gather(*coros, return_exceptions=True)

    try:
        results = run(main())
    finally:
        batcher.stop()
    assert isinstance(results[2], ValueError)
    good = [r for i, r in enumerate(results) if i != 2]
    assert [r.outputs for r in good] == [[f"m:ok{i}!"] for i in range(5)]


def test_timed_out_job_is_never_decoded():
    gate = threading.Event()
    seen: list[str] = []

    def slow(key, texts):
        seen.extend(texts)
        gate.wait(5)
        return list(texts)

    batcher = MicroBatcher(slow, max_wait_ms=0)

    async def main():
        first = asyncio.create_task(batcher.submit("m", ["first"], [1]))
        await asyncio.sleep(0.05)  # the worker is now blocked inside 'first'
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit("m", ["late"], [1]), 0.05)
        gate.set()
        assert (await first).outputs == ["first"]
        assert (await batcher.submit("m", ["after"], [1])).outputs == ["after"]

    try:
        run(main())
    finally:
        gate.set()
        batcher.stop()
    assert seen == ["first", "after"]


def test_event_loop_keeps_running_while_a_batch_decodes():
    batcher = MicroBatcher(lambda key, texts: time.sleep(0.5) or list(texts), max_wait_ms=0)

    async def main():
        task = asyncio.create_task(batcher.submit("m", ["x"], [1]))
        ticks = 0
        t0 = time.monotonic()
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert time.monotonic() - t0 >= 0.4
        return ticks

    try:
        ticks = run(main())
    finally:
        batcher.stop()
    assert ticks >= 10, "the event loop was blocked during decoding"


def test_queue_limit_and_shutdown():
    gate = threading.Event()
    batcher = MicroBatcher(lambda k, t: gate.wait(5) and list(t), max_wait_ms=0, max_queue=2)

    async def main():
        running = asyncio.create_task(batcher.submit("m", ["a"], [1]))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit("m", [s], [1])) for s in "bc"]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit("m", ["d"], [1])
        await asyncio.to_thread(batcher.stop, 0.01)  # fails the queued jobs
        for q in queued:
            with pytest.raises(RuntimeError, match="shutting down"):
                await q
        gate.set()
        await asyncio.sleep(0.05)
        running.cancel()

    try:
        run(main())
    finally:
        gate.set()
        batcher.stop()


def test_clients_answered_by_one_batch_rejoin_the_next():
    """Under load the queued jobs are 'late' already; the batcher still waits ``max_wait_ms``
    after finishing a batch, so a client that resubmits right away joins the next search."""
    rec = Recorder(delay=0.5)  # decoding 'a' runs from 0.2 s to 0.7 s
    batcher = MicroBatcher(rec, max_wait_ms=200)

    async def main():
        a = asyncio.create_task(batcher.submit("m", ["a"], [1]))
        await asyncio.sleep(0.3)  # "a" waited 0.2 s for company, and is decoding now
        b = asyncio.create_task(batcher.submit("m", ["b"], [1]))  # queued during the decode
        await a
        c = await batcher.submit("m", ["c"], [1])  # the client of 'a' comes straight back
        return await b, c

    try:
        b, c = run(main())
    finally:
        batcher.stop()
    assert [texts for _, texts in rec.calls] == [["a"], ["b", "c"]]
    assert b.batch_requests == c.batch_requests == 2


def test_several_workers_decode_batches_at_once_and_split_results_exactly():
    """Two workers: batches overlap in time (both threads busy at once), every job still gets
    exactly its own outputs, and stop() joins both threads."""
    active, peak = [0], [0]
    lock = threading.Lock()

    def run_batch(key, texts):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return [f"{key}:{t}!" for t in texts]

    batcher = MicroBatcher(run_batch, max_batch_tokens=40, max_wait_ms=1, workers=2)
    jobs = [[f"job{j}-{i}" for i in range(1 + j % 3)] for j in range(40)]

    async def main():
        return await asyncio.gather(*(batcher.submit("m", t, [len(s) for s in t]) for t in jobs))

    try:
        results = run(main())
        threads = list(batcher._threads)
    finally:
        batcher.stop()
    for texts, res in zip(jobs, results):
        assert res.outputs == [f"m:{t}!" for t in texts]
    assert peak[0] == 2, "the two workers never decoded at the same time"
    assert len(threads) == 2 and not any(t.is_alive() for t in threads)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(run_batch, workers=0)
