"""Connection-level limits (serve/connections.py) on a real loopback socket: header size,
header/body read timeouts, keep-alive, the connection limit, and /health during a slow-client
attack. Every limit is set small so that each test takes a few seconds at most."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest
import uvicorn

from mt.modelio import load_model
from serve.app import create_app
from serve.connections import uvicorn_config
from serve.settings import ServerSettings
from _serve_support import Sleeper, free_port, make_random_model_dir


@pytest.fixture(scope="module")
def text_pipeline(tmp_path_factory):
    return load_model(make_random_model_dir(tmp_path_factory.mktemp("tiny") / "model", preset="tiny")).text


@contextmanager
def serving(text_pipeline, delay: float = 0.0, **limits) -> Iterator[tuple[str, uvicorn.Server]]:
    """The app (a Sleeper model) under ``mt serve``'s uvicorn configuration on 127.0.0.1."""
    settings = ServerSettings(**limits)
    app = create_app({"de-en": Sleeper(text_pipeline, delay)}, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(10)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF, possibly after a response, or a reset)."""
    sock.setblocking(False)
    try:
        while chunk := sock.recv(65536):
            if not chunk:
                break
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_oversized_headers_get_431_and_are_not_read(text_pipeline):
    with serving(text_pipeline, max_header_bytes=4096) as (url, _):
        sock = connect(url)
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before all of it is sent
        data, _ = read_until_closed(sock, 5)
        assert data.startswith(b"HTTP/1.1 431"), data[:100]
        assert b'"code": "headers_too_large"' in data and b"4096" in data
        # headers just under the limit, and a body larger than it, are fine
        r = httpx.get(url + "/health", headers={"X-Pad": "p" * 3500})
        assert r.status_code == 200
        r = httpx.post(url + "/v1/translate", json={"texts": ["abc " * 400]})
        assert r.status_code in (200, 422), r.text  # 422: token limit; the point is: not 431


def test_silent_and_slow_clients_get_408_at_the_header_deadline(text_pipeline):
    with serving(text_pipeline, header_timeout_s=1.0) as (url, _):
        silent = connect(url)
        slow = connect(url)
        start = time.monotonic()
        for byte in b"GET /health HTTP/1.1\r\n":  # a byte every 0.1 s: ~2.3 s for the line
            try:
                slow.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            if time.monotonic() - start > 1.6:
                break
        data, _ = read_until_closed(slow, 3)
        assert data.startswith(b"HTTP/1.1 408") and b"request_timeout" in data, data
        assert time.monotonic() - start < 2.5  # a deadline: bytes arriving did not extend it
        data, _ = read_until_closed(silent, 3)
        assert data.startswith(b"HTTP/1.1 408"), data


def test_slow_body_gets_408_at_the_body_deadline(text_pipeline):
    with serving(text_pipeline, body_timeout_s=0.8) as (url, _):
        sock = connect(url)
        sock.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"texts\"")
        data, took = read_until_closed(sock, 5)
        assert data.startswith(b"HTTP/1.1 408") and b"body" in data, data
        assert 0.6 < took < 2.5
        assert httpx.get(url + "/health").status_code == 200


def test_idle_keepalive_connections_are_closed(text_pipeline):
    with serving(text_pipeline, keepalive_timeout_s=0.5) as (url, _):
        sock = connect(url)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = read_until_closed(sock, 5)
        assert data.startswith(b"HTTP/1.1 200") and took < 2.5


def test_health_answers_during_a_slow_client_attack(text_pipeline):
    """40 clients send a header byte every 0.5 s to a server allowing 16 connections: a
    well-behaved client still gets /health quickly (it displaces the longest-idle attacker),
    the server never holds more than 16 connections, and every attacker is cut off by the
    header deadline."""
    with serving(text_pipeline, max_connections=16, header_timeout_s=1.5) as (url, server):
        attackers = [connect(url) for _ in range(40)]
        most, latencies = 0, []
        stop = time.monotonic() + 3.0
        while time.monotonic() < stop:
            for sock in attackers:
                try:
                    sock.send(b"G")
                except OSError:
                    pass  # closed by the server
            for _ in range(2):
                t0 = time.perf_counter()
                assert httpx.get(url + "/health", timeout=2).status_code == 200
                latencies.append(time.perf_counter() - t0)
                most = max(most, len(server.server_state.connections))
                time.sleep(0.25)
        assert max(latencies) < 1.0, latencies
        assert most <= 16, most
        time.sleep(0.3)
        open_ = [s for s in attackers if not is_closed(s)]
        assert not open_, f"{len(open_)} slow clients still connected after the header deadline"
        for sock in attackers:
            sock.close()


def test_connections_over_the_limit_evict_idle_ones_or_get_503(text_pipeline):
    with serving(text_pipeline, delay=1.5, max_connections=2) as (url, _):
        idle = [connect(url) for _ in range(2)]
        time.sleep(0.1)
        assert httpx.get(url + "/health").status_code == 200  # displaced an idle connection
        assert sum(is_closed(s) for s in idle) >= 1
        for s in idle:
            s.close()
        time.sleep(0.1)
        # both connections busy with a translation: a third one is answered 503
        results: list[int] = []
        busy = [threading.Thread(target=lambda: results.append(httpx.post(
            url + "/v1/translate", json={"texts": ["abc"]}, timeout=10).status_code)) for _ in range(2)]
        for t in busy:
            t.start()
        time.sleep(0.5)
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json()["code"] == "too_many_connections", r.text
        assert r.headers["retry-after"] == "1"
        for t in busy:
            t.join()
        assert results == [200, 200]
        assert httpx.get(url + "/health").status_code == 200
