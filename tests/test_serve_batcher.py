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


class Overlap:
    """run_batch double that records each batch's texts and how many batches ran at once."""

    def __init__(self, delay: float) -> None:
        self.delay, self.calls, self.active, self.peak = delay, [], 0, 0
        self.lock = threading.Lock()

    def __call__(self, key, texts):
        with self.lock:
            self.calls.append(list(texts))
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
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
    rec = Overlap(delay=0.05)
    batcher = MicroBatcher(rec, max_batch_tokens=40, max_wait_ms=1, workers=2)
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
    assert rec.peak == 2, "the two workers never decoded at the same time"
    assert len(threads) == 2 and not any(t.is_alive() for t in threads)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(rec, workers=0)


@pytest.mark.parametrize("workers", [1, 2])
def test_free_workers_share_the_queue(workers: int) -> None:
    """8 clients at once on 2 free workers: two batches of 4 decode side by side (not 8 on one
    worker while the other waits); one worker still takes all 8."""
    rec = Overlap(delay=0.2)
    batcher = MicroBatcher(rec, max_wait_ms=30, workers=workers)

    async def main():
        await asyncio.sleep(0.05)  # the workers are started and free
        return await asyncio.gather(*(batcher.submit("m", [f"s{i}"], [3]) for i in range(8)))

    batcher.start()
    try:
        results = run(main())
    finally:
        batcher.stop()
    assert [r.outputs for r in results] == [[f"m:s{i}!"] for i in range(8)]
    assert sorted(len(c) for c in rec.calls) == ([4, 4] if workers == 2 else [8])
    assert rec.peak == workers


def test_one_request_of_several_texts_is_decoded_on_both_free_workers() -> None:
    """A paragraph's sentences split between two free workers, its outputs back in order."""
    rec = Overlap(delay=0.2)
    batcher = MicroBatcher(rec, max_wait_ms=1, workers=2)
    texts = [f"sentence {i} " + "x" * i for i in range(6)]

    async def main():
        await asyncio.sleep(0.05)
        return await batcher.submit("m", texts, [len(t) for t in texts])

    batcher.start()
    try:
        res = run(main())
    finally:
        batcher.stop()
    assert res.outputs == [f"m:{t}!" for t in texts]
    assert len(rec.calls) == 2 and rec.peak == 2
    assert sorted(t for c in rec.calls for t in c) == sorted(texts)


# ---------------------------------------------------------------------------- fairness, cancellation


def test_a_big_job_is_decoded_in_chunks_that_take_turns_with_small_jobs():
    """Two big jobs keep both workers busy for ~1.2 s each; a small job queued meanwhile waits
    for one chunk (~0.12 s), not for a whole big job (what the old batcher did: ~1 s)."""
    calls: list[list[str]] = []

    def run_batch(key, texts):
        calls.append(list(texts))
        time.sleep(0.03 * sum(t.startswith("big") for t in texts))  # 30 ms per big text
        return [t.upper() for t in texts]

    batcher = MicroBatcher(run_batch, max_batch_cost=4000, max_wait_ms=1, workers=2)
    big = [[f"big{j}-{i}" for i in range(40)] for j in range(2)]

    async def main():
        jobs = [asyncio.create_task(batcher.submit("m", texts, [5] * 40, [1000] * 40)) for texts in big]
        await asyncio.sleep(0.15)  # both workers are inside big chunks now
        t0 = time.monotonic()
        small = await batcher.submit("m", ["small"], [2], [10])
        latency = time.monotonic() - t0
        return latency, small, await asyncio.gather(*jobs)

    try:
        latency, small, results = run(main())
    finally:
        batcher.stop()
    assert small.outputs == ["SMALL"]
    assert latency < 0.6, f"the small request waited {latency:.2f} s behind the big ones"
    for texts, res in zip(big, results):
        assert res.outputs == [t.upper() for t in texts]  # chunks put back in the job's order
    assert max(sum(t.startswith("big") for t in c) for c in calls) == 4  # 4 x 1000 = max_batch_cost


def test_an_abandoned_batch_stops_and_frees_its_worker():
    """The only job of a running batch times out: should_stop turns True, the search stops
    and the next request is served at once (the old batcher decoded to the end)."""
    stopped = threading.Event()

    def run_batch(key, texts, should_stop):
        if texts == ["long"]:
            for _ in range(500):  # 5 s unless stopped
                if should_stop():
                    stopped.set()
                    raise RuntimeError("stopped")
                time.sleep(0.01)
        return list(texts)

    batcher = MicroBatcher(run_batch, max_wait_ms=0)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit("m", ["long"], [1]), 0.2)
        t0 = time.monotonic()
        assert (await batcher.submit("m", ["short"], [1])).outputs == ["short"]
        return time.monotonic() - t0

    try:
        elapsed = run(main())
    finally:
        batcher.stop()
    assert stopped.is_set() and elapsed < 1.0


def test_a_batch_with_a_live_job_runs_to_the_end():
    asked: list[bool] = []

    def run_batch(key, texts, should_stop):
        for _ in range(30):
            asked.append(should_stop())
            time.sleep(0.01)
        return list(texts)

    batcher = MicroBatcher(run_batch, max_wait_ms=50)

    async def main():
        live = asyncio.create_task(batcher.submit("m", ["a"], [1]))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit("m", ["b"], [1]), 0.1)  # same batch as "a"
        return await live

    try:
        result = run(main())
    finally:
        batcher.stop()
    assert result.outputs == ["a"] and result.batch_requests == 2
    assert not any(asked)


def test_stop_with_cancel_stops_running_batches():
    started = threading.Event()

    def run_batch(key, texts, should_stop):
        started.set()
        while not should_stop():
            time.sleep(0.01)
        raise RuntimeError("stopped")

    batcher = MicroBatcher(run_batch, max_wait_ms=0)

    async def main():
        task = asyncio.create_task(batcher.submit("m", ["x"], [1]))
        await asyncio.to_thread(started.wait, 5)
        t0 = time.monotonic()
        await asyncio.to_thread(batcher.stop, 5, True)
        with pytest.raises(RuntimeError, match="shutting down"):
            await task
        return time.monotonic() - t0

    assert run(main()) < 1.0


def test_while_small_jobs_arrive_one_worker_stays_free_of_big_chunks():
    """Two workers, a big job (4 chunks of 0.4 s) and a stream of small jobs: chunks run on
    one worker only, so no small job waits for a chunk to end."""
    active, peak = [0], [0]
    lock = threading.Lock()

    def run_batch(key, texts):
        big = any(t.startswith("big") for t in texts)
        if big:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
        time.sleep(0.4 if big else 0.01)
        if big:
            with lock:
                active[0] -= 1
        return list(texts)

    batcher = MicroBatcher(run_batch, max_batch_cost=100, max_wait_ms=1, workers=2)

    async def small(i):
        t0 = time.monotonic()
        await batcher.submit("m", [f"s{i}"], [1], [1])
        return time.monotonic() - t0

    async def main():
        first = await small(-1)  # small traffic has begun
        big = asyncio.create_task(batcher.submit("m", [f"big{i}" for i in range(4)], [1] * 4, [100] * 4))
        latencies = [first]
        while not big.done():
            latencies.append(await small(len(latencies)))
            await asyncio.sleep(0.03)
        return latencies, await big

    try:
        latencies, big = run(main())
    finally:
        batcher.stop()
    assert big.outputs == [f"big{i}" for i in range(4)]
    assert peak[0] == 1, "both workers decoded big chunks while small jobs arrived"
    assert max(latencies) < 0.3, max(latencies)


def test_a_short_handed_decoder_preempts_big_chunks_and_requeues_them():
    """paused() (a replacement loading) stops a running chunk of a big job at its next step;
    its texts are decoded later, and the job still gets every output in order."""
    paused = threading.Event()
    seen: list[str] = []
    stopped_at: list[float] = []

    def run_batch(key, texts, should_stop):
        seen.extend(texts)
        if texts[0].startswith("big"):
            for _ in range(100):  # 1 s unless stopped
                if should_stop():
                    stopped_at.append(time.monotonic())
                    raise RuntimeError("stopped")
                time.sleep(0.01)
        return [t.upper() for t in texts]

    batcher = MicroBatcher(run_batch, max_wait_ms=1, workers=2, paused=paused.is_set, max_batch_cost=10)

    async def main():
        await batcher.submit("m", ["s"], [1], [1])  # small traffic
        big = asyncio.create_task(batcher.submit("m", ["big0", "big1"], [1, 1], [10, 10]))
        await asyncio.sleep(0.2)  # big0 decodes
        paused.set()
        t0 = time.monotonic()
        while seen.count("big0") < 2 and time.monotonic() - t0 < 5:
            if stopped_at:
                assert stopped_at[0] - t0 < 0.5
            await batcher.submit("m", ["s"], [1], [1])  # small jobs keep the preemption going
            await asyncio.sleep(0.05)
            if seen.count("big0") == 1 and time.monotonic() - t0 > 0.3:
                paused.clear()  # the replacement is ready: the chunk runs again
        return await big

    try:
        result = run(main())
    finally:
        batcher.stop()
    assert result.outputs == ["BIG0", "BIG1"]
    assert seen.count("big0") == 2 and len(stopped_at) == 1, seen
