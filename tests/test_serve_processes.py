"""Decoding worker processes (serve/processes.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from mt.decode.search import DecodeCancelled
from mt.modelio import load_model
from serve.engine import RequestOptions, build_engine
from serve.processes import DecodeProcesses
from _serve_support import make_random_model_dir

TEXTS = ["ein kleiner test", "zwei hunde", "", "noch ein etwas längerer satz für den test"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    model_dir = make_random_model_dir(tmp_path_factory.mktemp("proc") / "m")
    procs = DecodeProcesses([f"m={model_dir}"], n=2, threads=1)
    yield procs, model_dir
    procs.close()


def test_processes_translate_exactly_like_the_server_process(pool):
    procs, model_dir = pool
    opts = RequestOptions(beam=3, alpha=1.0, max_length=None, n_best=2)
    local = build_engine("m", load_model(model_dir)).translate(TEXTS, opts)
    results = {}

    def call(k):  # two batcher threads at once, each gets a process
        results[k] = procs.run_batch(("m", opts), TEXTS)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for k in range(2):
        assert [[(h.text, h.tokens, h.score) for h in hyps] for hyps in results[k]] == \
            [[(h.text, h.tokens, h.score) for h in hyps] for hyps in local]


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_errors_come_back_and_dead_idle_processes_are_invisible(pool):
    """Both processes killed while idle: the next batches are decoded by their replacements
    (old code: each answered 'the decoding process died', a 500 to the client)."""
    procs, _ = pool
    opts = RequestOptions(beam=2, alpha=1.0, max_length=None, n_best=1)
    with pytest.raises(RuntimeError, match="KeyError"):
        procs.run_batch(("no-such-model", opts), ["x"])
    before = set(procs.pids)
    for pid in procs.pids:
        os.kill(pid, signal.SIGKILL)
    for _ in range(3):
        assert procs.run_batch(("m", opts), ["hallo"])[0][0].tokens is not None
    wait_for(lambda: len(procs.pids) == 2)
    assert not before & set(procs.pids) and procs.health() is None


def long_batch(procs, opts, result: dict, stop=None) -> threading.Thread:
    """Run a batch that decodes for seconds (a random model never ends before max_length)."""
    def call():
        try:
            result["out"] = procs.run_batch(("m", opts), LONG, stop)
        except BaseException as e:  # noqa: BLE001 - checked by the test
            result["error"] = e
    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: procs.busy_pids, 10)
    return t


LONG = [f"satz nummer {i} für einen langen test" for i in range(6)]


def test_a_process_killed_while_decoding_is_retried_on_another(pool):
    procs, _ = pool
    opts = RequestOptions(beam=8, max_length=300)
    result: dict = {}
    t = long_batch(procs, opts, result)
    time.sleep(0.2)
    [victim] = procs.busy_pids
    os.kill(victim, signal.SIGKILL)
    t.join(60)
    assert "error" not in result, result.get("error")
    assert [len(h[0].tokens) for h in result["out"]] == [300] * len(LONG)
    wait_for(lambda: len(procs.pids) == 2)
    assert victim not in procs.pids


def test_an_abandoned_batch_stops_in_the_process_within_a_step(pool):
    """should_stop turning True stops the child's search (old code: it decoded to the end)."""
    procs, _ = pool
    opts = RequestOptions(beam=8, max_length=1000)  # ~30 s on this machine if not stopped
    stop = threading.Event()
    result: dict = {}
    t = long_batch(procs, opts, result, stop.is_set)
    time.sleep(0.3)
    t0 = time.monotonic()
    stop.set()
    t.join(30)
    assert time.monotonic() - t0 < 3.0
    assert isinstance(result.get("error"), DecodeCancelled)
    t0 = time.monotonic()  # both processes serve at once again: the stopped one is free
    outs = {}
    short = RequestOptions(beam=2)
    threads = [threading.Thread(target=lambda k=k: outs.update({k: procs.run_batch(("m", short), ["hallo"])}))
               for k in range(2)]
    [th.start() for th in threads]
    [th.join(30) for th in threads]
    assert len(outs) == 2 and time.monotonic() - t0 < 10


def test_a_model_that_cannot_load_stops_start_up(tmp_path):
    with pytest.raises(RuntimeError, match="could not load"):
        DecodeProcesses([f"m={tmp_path / 'missing'}"], n=1, threads=1)


def test_processes_build_the_requested_decoding_model(pool):
    """`mt serve --int8` etc. reach the decoding processes: their int8 outputs are the local
    int8 engine's (int8 scores differ from fp32), and a missing shortlist stops start-up."""
    _, model_dir = pool
    opts = RequestOptions(beam=2, alpha=1.0, max_length=None, n_best=1)
    procs = DecodeProcesses([f"m={model_dir}"], n=1, threads=1, decode={"int8": True})
    try:
        remote = procs.run_batch(("m", opts), TEXTS)
    finally:
        procs.close()
    local = build_engine("m", load_model(model_dir), {"int8": True}).translate(TEXTS, opts)
    fp32 = build_engine("m", load_model(model_dir)).translate(TEXTS, opts)
    key = [[(h.tokens, h.score) for h in hyps] for hyps in remote]
    assert key == [[(h.tokens, h.score) for h in hyps] for hyps in local]
    assert key != [[(h.tokens, h.score) for h in hyps] for hyps in fp32]
    with pytest.raises(RuntimeError, match="shortlist"):
        DecodeProcesses([f"m={model_dir}"], n=1, threads=1, decode={"shortlist": True})
