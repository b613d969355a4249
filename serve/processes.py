"""Decoding in worker processes: each batcher worker hands its batches to its own process.

Two decoding *threads* in the server process share one GIL with each other and with the
event loop. Beam search spends part of every step in Python, so on the 2-core reference VM
the two threads were inside a batched search 98% of the time but got only 85% of a core
each: the rest was spent waiting for the GIL (``bench/results.md``). A process per worker
has its own interpreter; the server process keeps the HTTP side, the queue and the
micro-batching, and sends each batch (texts + options) down a pipe.

``mt serve`` uses this on CPU by default (``--worker-processes 1``). Each process loads the
models from their directories itself (start-up takes a few seconds more, and memory holds
one copy per process plus the server's own, used for token counting). A process that dies is
replaced; the batch it was decoding fails with an error (and the batcher retries its
requests one by one, as for any failed batch).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
from typing import Any, Hashable, Optional, Sequence

log = logging.getLogger(__name__)


def _child_main(specs: list[str], threads: int, decode: dict[str, Any], conn) -> None:
    """Process body: load the models, say "ready", then translate batches until ``None``.
    ``decode``: the decoding settings given to the server (``ServerSettings.decode``)."""
    import torch

    torch.set_num_threads(threads)
    from serve.engine import build_engine
    from serve.modelspecs import load_models  # the same names and engines as the server process

    try:
        engines = {name: build_engine(name, obj, decode) for name, obj in load_models(specs).items()}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which refuses to start
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the server went away
            return
        if msg is None:
            return
        (name, opts), texts = msg
        try:
            conn.send(("ok", engines[name].translate(texts, opts)))
        except Exception as e:  # noqa: BLE001 - one bad batch must not end the process
            conn.send(("error", f"{type(e).__name__}: {e}"))


class DecodeProcesses:
    """``n`` decoding processes, each with ``threads`` torch threads, for models ``specs``
    (``[NAME=]DIR``, as given to ``mt serve --model``), decoding with the settings ``decode``
    (field → value, over each model's stored defaults). :meth:`run_batch` is a
    ``MicroBatcher`` ``run_batch``: call it from at most ``n`` threads at once."""

    def __init__(self, specs: list[str], n: int, threads: int, decode: Optional[dict[str, Any]] = None,
                 start_timeout_s: float = 300.0) -> None:  # fmt: skip
        self.specs, self.threads, self.start_timeout_s = list(specs), threads, start_timeout_s
        self.decode = dict(decode or {})
        self._ctx = mp.get_context("spawn")  # fork would copy the parent's OpenMP and event-loop threads' state
        self._lock = threading.Lock()
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._procs: dict[int, tuple[Any, Any]] = {}
        started = [self._spawn(i) for i in range(n)]
        try:
            for i in started:
                self._wait_ready(i)
                self._free.put(i)
        except Exception:
            self.close()
            raise

    def _spawn(self, i: int) -> int:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child_main, args=(self.specs, self.threads, self.decode, child),
                                 daemon=True, name=f"mt-decode-{i}")  # fmt: skip
        proc.start()
        child.close()  # the parent's copy: EOF reaches us when the process dies
        with self._lock:
            self._procs[i] = (proc, parent)
        return i

    def _wait_ready(self, i: int) -> None:
        proc, conn = self._procs[i]
        if not conn.poll(self.start_timeout_s):
            raise RuntimeError(f"decoding process {i} did not start within {self.start_timeout_s:.0f} s")
        try:
            status, payload = conn.recv()
        except EOFError:
            raise RuntimeError(f"decoding process {i} exited while loading (exit code {proc.exitcode})") from None
        if status != "ready":
            raise RuntimeError(f"decoding process {i} could not load the models: {payload}")

    def run_batch(self, key: Hashable, texts: Sequence[str]) -> list:
        """Translate ``texts`` with ``key = (model name, RequestOptions)`` in a free process."""
        i = self._free.get()
        proc, conn = self._procs[i]
        try:
            conn.send((key, list(texts)))
            status, payload = conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            log.error("decoding process %d died (exit code %s); starting a new one", i, proc.exitcode)
            proc.join(1)
            self._spawn(i)
            try:
                self._wait_ready(i)
            finally:
                self._free.put(i)
            raise RuntimeError("the decoding process died during this batch") from None
        self._free.put(i)
        if status != "ok":
            raise RuntimeError(payload)
        return payload

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self._procs.values()]

    def close(self, timeout: float = 10.0) -> None:
        """Ask every process to finish, then terminate any that does not."""
        with self._lock:
            procs, self._procs = list(self._procs.values()), {}
        for proc, conn in procs:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc, conn in procs:
            proc.join(timeout)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout)
            conn.close()
