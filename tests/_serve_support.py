"""Server-test support: an app on a real loopback socket in-process, and random model dirs.

``make_random_model_dir``/``synthetic_sentences`` are ``bench/devmodel.py``'s (one copy, shared
with the benchmarks; neither belongs in the installed packages).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.devmodel import make_random_model_dir, synthetic_sentences  # noqa: E402

from mt.decode.options import Hypothesis  # noqa: E402

__all__ = ["LiveServer", "Sleeper", "free_port", "make_random_model_dir", "synthetic_sentences", "wait_ready"]


class Sleeper:
    """Translator double: ``delay`` seconds per batch (a long decode), then the texts upper-cased."""

    def __init__(self, text: Any, delay: float) -> None:
        self.text, self.delay, self.meta = text, delay, {}

    def translate_batch(self, texts: list[str], opts: Any) -> list[list[Hypothesis]]:
        time.sleep(self.delay)
        return [[Hypothesis(t.upper(), [], 0.0)] for t in texts]


def wait_ready(proc: Any, url: str, timeout: float) -> None:
    """Wait until the ``mt serve`` subprocess ``proc`` answers ``/ready`` with 200; fail with
    its output if it exits first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.2)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``with LiveServer(app) as url:`` serves ``app`` with uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, app: Any, port: int | None = None, startup_timeout: float = 20.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)
        self.startup_timeout = startup_timeout

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
