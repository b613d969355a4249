"""Graceful shutdown of ``mt serve`` (a subprocess with one decoding process): SIGTERM or
SIGINT during a long translation ends the server within ``--shutdown-timeout-s`` plus the
few seconds that stopping the decoding processes may take, the request in progress is
answered 503, and no process of the server is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from _serve_support import free_port, make_random_model_dir, wait_ready

SHUTDOWN_S = 1.0
BOUND_S = SHUTDOWN_S + 7.0  # + the decoding processes' stop (2 s, then terminate) + slack for a busy CI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_random_model_dir(tmp_path_factory.mktemp("tiny") / "model", preset="tiny", seed=3)


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (the server and its children inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours
            continue
        if state != "Z":  # a zombie has exited; its parent (init, by now) reaps it
            found.append(int(entry.name))
    return found


def start_server(model_dir: Path, marker: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, MT_SHUTDOWN_TEST=marker)
    env.pop("MT_API_KEY", None)
    # every output 490-500 tokens at beam 16: a request of 6 texts decodes for many seconds
    proc = subprocess.Popen(
        [sys.executable, "-m", "mt.cli", "serve", "--model", str(model_dir), "--port", str(port),
         "--worker-processes", "1", "--workers", "1", "--threads", "1", "--shutdown-timeout-s", str(SHUTDOWN_S),
         "--beam", "16", "--max-len-a", "0", "--max-len-b", "500", "--min-len", "490"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, 90)
    return proc, url


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_long_batch_stops_everything_in_bounded_time(model_dir, sig):
    marker = uuid.uuid4().hex
    proc, url = start_server(model_dir, marker)
    try:
        assert len(marked_pids(marker)) >= 2  # the server and its decoding process
        reply: dict = {}

        def long_request() -> None:
            try:
                reply["r"] = httpx.post(url + "/v1/translate", json={"texts": ["Hallo Welt"] * 6}, timeout=60)
            except httpx.TransportError as e:
                reply["error"] = e

        client = threading.Thread(target=long_request)
        client.start()
        time.sleep(1.0)  # the batch is decoding now
        assert "r" not in reply, reply
        start = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(BOUND_S)
        took = time.monotonic() - start
        client.join(10)
        assert code == 0, proc.stdout.read()
        assert took >= SHUTDOWN_S * 0.8  # the request in progress was given its time
        r = reply.get("r")
        assert r is not None and r.status_code == 503 and r.json()["code"] == "shutting_down", reply
        deadline = time.monotonic() + 2
        while marked_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not marked_pids(marker), "a process of the server outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in marked_pids(marker):  # leave nothing behind even when the test fails
            os.kill(pid, signal.SIGKILL)
