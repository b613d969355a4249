"""Decoding in worker processes: each batcher worker hands its batches to its own process.

Two decoding *threads* in the server process share one GIL with each other and with the
event loop. Beam search spends part of every step in Python, so on the 2-core reference VM
the two threads were inside a batched search 98% of the time but got only 85% of a core
each: the rest was spent waiting for the GIL (``bench/results.md``). A process per worker
has its own interpreter; the server process keeps the HTTP side, the queue and the
micro-batching, and sends each batch (texts + options) down a pipe.

``mt serve`` uses this on CPU by default (``--worker-processes 1``). Each process loads the
models from their directories itself (start-up takes a few seconds more, and memory holds
one copy per process plus the server's own, used for token counting).

Faults stay invisible to clients where possible:

* **a process dies** (killed, out of memory) while it decodes a batch, or while idle and a
  batch is sent to it: it is replaced in the background, and the batch goes to the next free
  process (a healthy one, or the replacement once it has loaded). Each process acknowledges a
  batch before decoding it, so only deaths *during* a batch count against its one retry (a
  batch that kills its process is not tried on every process); while a replacement loads,
  :meth:`DecodeProcesses.replacing` tells the batcher to hold big requests' chunks back;
* **replacements serve the same model**: the sha256 of every model file is recorded at
  start-up (:func:`serve.modelspecs.model_manifest`) and every process checks its files
  against it after loading. A replacement that finds them changed or gone does not serve;
  :meth:`DecodeProcesses.health` then names the reason (``/ready`` answers 503 with it) and
  the remaining processes keep serving;
* **cancellation**: each process has a shared stop flag. While a batch decodes, the parent
  polls the batcher's ``should_stop`` (True once every request of the batch is abandoned)
  and raises the flag; the child's search stops at its next step and answers "cancelled".
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from typing import Any, Callable, Hashable, Optional, Sequence

from mt.decode.search import DecodeCancelled
from serve.batcher import Unavailable
from serve.modelspecs import Manifest, model_manifest

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often the parent asks should_stop while a batch decodes (a stop takes effect within this + one step)


def _child_main(specs: list[str], threads: int, decode: dict[str, Any], manifest: Manifest, stop: Any,
                conn: Any, precision: dict[str, Any]) -> None:  # fmt: skip
    """Process body: load the models, check their files against ``manifest``, say "ready",
    then translate batches until ``None``. ``decode``: the decoding settings given to the
    server (``ServerSettings.decode``); ``stop``: the shared flag (a ``c_byte``) that stops the
    running batch at its next decoding step; ``precision``: the parent's ``dtype: auto``
    findings (:func:`mt.decode.precision.findings`), so every process decodes alike."""
    import torch

    from mt.decode import precision as _precision

    torch.set_num_threads(threads)
    _precision.adopt(precision)
    from serve.engine import build_engine
    from serve.modelspecs import check_manifest, load_models  # the same names and engines as the server process

    try:
        engines = {name: build_engine(name, obj, decode) for name, obj in load_models(specs).items()}
        # after loading: files changed before or during the load show up here
        check_manifest(manifest)
    except Exception as e:  # noqa: BLE001 - reported to the parent (start-up fails / the slot is down)
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    parent = os.getppid()

    def should_stop() -> bool:
        # the parent's flag, or the parent is gone (killed without closing us: nobody will
        # read the result, so stop at the next step instead of decoding on as an orphan)
        return stop.value != 0 or os.getppid() != parent

    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the server went away
            return
        if msg is None:
            return
        (name, opts), texts = msg
        try:
            # the parent learns that a death after this point happened while decoding (a batch
            # may kill its process: retried once only), one before it while idle (no retry spent)
            conn.send(("started", None))
            reply = ("ok", engines[name].translate(texts, opts, should_stop))
        except DecodeCancelled:
            reply = ("cancelled", None)
        except Exception as e:  # noqa: BLE001 - one bad batch must not end the process
            reply = ("error", f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except OSError:  # the server went away
            return


class _Died(Exception):
    """The process of a slot went away (EOF or a broken pipe); ``started``: after it had
    acknowledged the batch (so the batch may be what killed it)."""

    def __init__(self, started: bool) -> None:
        super().__init__(f"decoding process died ({'during' if started else 'before'} the batch)")
        self.started = started


class DecodeProcesses:
    """``n`` decoding processes, each with ``threads`` torch threads, for models ``specs``
    (``[NAME=]DIR``, as given to ``mt serve --model``), decoding with the settings ``decode``
    (field → value, over each model's stored defaults). :meth:`run_batch` is a
    ``MicroBatcher`` ``run_batch``: call it from at most ``n`` threads at once."""

    def __init__(self, specs: list[str], n: int, threads: int, decode: Optional[dict[str, Any]] = None,
                 start_timeout_s: float = 300.0, precision: Optional[dict[str, Any]] = None) -> None:  # fmt: skip
        self.specs, self.n, self.threads, self.start_timeout_s = list(specs), n, threads, start_timeout_s
        self.decode = dict(decode or {})
        self.precision = dict(precision or {})  # dtype auto: the parent's findings (serve.cli.settle_precision)
        self.manifest = model_manifest(self.specs)  # what every process, replacements included, must load
        self._ctx = mp.get_context("spawn")  # fork would copy the parent's OpenMP and event-loop threads' state
        self._lock = threading.Lock()
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._procs: dict[int, tuple[Any, Any, Any]] = {}  # slot -> (process, pipe, stop flag)
        self._problems: dict[int, str] = {}  # slot -> why it has no process (its replacement failed)
        self._busy: set[int] = set()  # slots decoding a batch now
        self._loading: set[int] = set()  # slots whose replacement is loading
        self._closed = False
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
        stop = self._ctx.Value("b", 0, lock=False)  # one byte: written by the parent, read by the child
        proc = self._ctx.Process(target=_child_main, name=f"mt-decode-{i}", daemon=True,
                                 args=(self.specs, self.threads, self.decode, self.manifest, stop, child,
                                       self.precision))  # fmt: skip
        with self._lock:  # close() sees every process started, or none starts after it
            if self._closed:
                raise RuntimeError("the decoding processes are closed")
            proc.start()
            self._procs[i] = (proc, parent, stop)
        child.close()  # the parent's copy: EOF reaches us when the process dies
        return i

    def _wait_ready(self, i: int) -> None:
        proc, conn, _ = self._procs[i]
        if not conn.poll(self.start_timeout_s):
            raise RuntimeError(f"decoding process {i} did not start within {self.start_timeout_s:.0f} s")
        try:
            status, payload = conn.recv()
        except EOFError:
            raise RuntimeError(f"decoding process {i} exited while loading (exit code {proc.exitcode})") from None
        if status != "ready":
            raise RuntimeError(f"decoding process {i} could not load the models: {payload}")

    # ------------------------------------------------------------------ batches

    def run_batch(self, key: Hashable, texts: Sequence[str],
                  should_stop: Optional[Callable[[], bool]] = None) -> list:  # fmt: skip
        """Translate ``texts`` with ``key = (model name, RequestOptions)`` in a free process.
        A process that dies is replaced and the batch sent to the next free one: once more if
        it died while decoding the batch, as often as needed (bounded) if it was dead before.
        ``should_stop`` True (polled) stops the batch: ``DecodeCancelled``. Raises
        ``Unavailable`` when no process is left to serve."""
        died_decoding = 0
        for _ in range(self.n + 2):  # a process that was dead before it took the batch costs no retry
            i = self._acquire(should_stop)
            try:
                result = self._on(i, key, texts, should_stop)
            except _Died as e:
                self._replace(i)
                died_decoding += e.started
                if died_decoding == 2:
                    raise RuntimeError("two decoding processes died while decoding this batch") from None
                log.warning("retrying the batch of the dead decoding process %d on the next free one", i)
                continue
            except BaseException:
                self._free.put(i)
                raise
            self._free.put(i)
            return result
        raise RuntimeError(f"{self.n + 2} decoding processes were dead when this batch reached them")

    def _acquire(self, should_stop: Optional[Callable[[], bool]]) -> int:
        """The next free slot with a live process; waits while processes are busy or
        replacements load. A process found dead here (it died idle) is replaced, and the
        batch does not spend its retry on it."""
        while True:
            try:
                i = self._free.get(timeout=POLL_S * 4)
            except queue.Empty:
                pass
            else:
                with self._lock:
                    entry = self._procs.get(i)
                if entry is None or entry[0].is_alive():  # None: closed, _on says so
                    return i
                self._replace(i)
                continue
            with self._lock:
                if self._closed:
                    raise Unavailable("the decoding processes are closed")
                if len(self._problems) == self.n:
                    raise Unavailable("no decoding process can serve: " + self._problem_text())
            if should_stop is not None and should_stop():
                raise DecodeCancelled("abandoned while waiting for a decoding process")

    def _on(self, i: int, key: Hashable, texts: Sequence[str], should_stop: Optional[Callable[[], bool]]) -> Any:
        """Send the batch to slot ``i``'s process and wait for its answer; ``_Died`` if it dies."""
        with self._lock:
            entry = self._procs.get(i)
        if entry is None:  # closed meanwhile
            raise Unavailable("the decoding processes are closed")
        _, conn, stop = entry
        stop.value = 0  # a stop raised during this slot's previous batch is over: its answer was read
        with self._lock:
            self._busy.add(i)
        started = False
        try:
            conn.send((key, list(texts)))
            while True:
                while not conn.poll(POLL_S):
                    if should_stop is not None and not stop.value and should_stop():
                        stop.value = 1  # the child's search stops at its next step and answers "cancelled"
                status, payload = conn.recv()
                if status != "started":
                    break
                started = True
        except (EOFError, OSError):  # OSError: BrokenPipeError, ConnectionResetError
            raise _Died(started) from None
        finally:
            with self._lock:
                self._busy.discard(i)
        if status == "cancelled":
            raise DecodeCancelled("the batch was stopped: every request in it was abandoned")
        if status != "ok":
            raise RuntimeError(payload)
        return payload

    # ------------------------------------------------------------------ faults

    def _replace(self, i: int) -> None:
        """Slot ``i``'s process died: start a replacement in the background; the slot is free
        again once it is ready (or marked down with the reason if it cannot load)."""
        with self._lock:
            entry = None if self._closed else self._procs.get(i)
            if entry is not None:
                self._loading.add(i)
        if entry is None:  # closing: nothing to replace
            return
        proc = entry[0]
        proc.join(1)
        log.error("decoding process %d (pid %s) died (exit code %s); starting a new one", i, proc.pid, proc.exitcode)
        threading.Thread(target=self._restart, args=(i,), name=f"mt-decode-restart-{i}", daemon=True).start()

    def _restart(self, i: int) -> None:
        try:
            self._spawn(i)
            self._wait_ready(i)
        except Exception as e:  # noqa: BLE001 - recorded for /ready; the other processes serve on
            with self._lock:
                self._loading.discard(i)
                if self._closed:
                    return
                self._problems[i] = f"{e} (it replaced one that died; restart the server once the models are back)"
                proc, conn, _ = self._procs.pop(i, (None, None, None))
            log.error("%s; any other processes keep serving, /ready reports it", self._problems[i])
            if proc is not None:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                conn.close()
            return
        with self._lock:
            self._loading.discard(i)
        self._free.put(i)

    def replacing(self) -> bool:
        """Whether a replacement is loading (the batcher then keeps big requests' chunks back,
        so that the processes left serve the small ones: ``MicroBatcher(paused=...)``)."""
        with self._lock:
            return bool(self._loading)

    def _problem_text(self) -> str:
        return "; ".join(self._problems[i] for i in sorted(self._problems))

    def health(self) -> Optional[str]:
        """None when every slot has a process serving or starting; else why not (a
        replacement could not load the server's models, e.g. the model directory changed or
        was deleted: restart the server once it is back)."""
        with self._lock:
            return self._problem_text() or None

    @property
    def pids(self) -> list[int]:
        """Process ids of the current decoding processes (replacements included)."""
        with self._lock:
            return [proc.pid for proc, _, _ in self._procs.values()]

    @property
    def busy_pids(self) -> list[int]:
        """Process ids of those decoding a batch now (for tests and ``bench/serve_chaos.py``)."""
        with self._lock:
            return [self._procs[i][0].pid for i in sorted(self._busy) if i in self._procs]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the running batches at their next step, ask every process to finish, then
        terminate (and kill) any that does not within ``timeout``."""
        with self._lock:
            self._closed = True
            procs, self._procs = list(self._procs.values()), {}
        for _, conn, stop in procs:
            stop.value = 1
            try:
                conn.send(None)
            except OSError:  # already gone
                pass
        deadline = time.monotonic() + timeout
        for proc, conn, _ in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
            conn.close()
