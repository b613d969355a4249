"""Decoding worker processes (serve/processes.py)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

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


def test_errors_come_back_and_a_dead_process_is_replaced(pool):
    procs, _ = pool
    opts = RequestOptions(beam=2, alpha=1.0, max_length=None, n_best=1)
    with pytest.raises(RuntimeError, match="KeyError"):
        procs.run_batch(("no-such-model", opts), ["x"])
    before = set(procs.pids)
    for pid in procs.pids:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="died"):
        procs.run_batch(("m", opts), ["hallo"])
    # the other (also killed) process fails the same way once, then both are new
    with pytest.raises(RuntimeError, match="died"):
        procs.run_batch(("m", opts), ["hallo"])
    assert procs.run_batch(("m", opts), ["hallo welt"])[0][0].tokens is not None
    assert not before & set(procs.pids)


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
