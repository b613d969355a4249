"""``mt serve`` / ``python -m serve``: settings from the flags, the models, decoding
processes, then uvicorn until interrupted."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Iterator, Optional

import uvicorn
from fastapi import FastAPI

from serve.app import create_app
from serve.connections import uvicorn_config
from serve.modelspecs import load_models
from serve.processes import DecodeProcesses
from serve.settings import ServerSettings
from serve.state import decoding_threads

log = logging.getLogger("mt.serve")

STOP_PROCESSES_S = 2.0  # at shutdown, how long the decoding processes get to exit before being terminated


def settings_from_args(args: Any) -> ServerSettings:
    """Settings from CLI arguments (any attribute named like a settings field) and MT_API_KEY.

    ``MT_API_KEY`` set but empty is refused (``ValueError``): it is what a deployment that
    meant to set a key but lost its value looks like, and serving openly would be its result.
    """
    from mt.decode.options import given

    fields = ServerSettings.__dataclass_fields__
    changes = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "api_key" not in changes and "MT_API_KEY" in os.environ:
        if not os.environ["MT_API_KEY"]:
            raise ValueError("MT_API_KEY is set but empty: unset it to serve without a key, or give it the key")
        changes["api_key"] = os.environ["MT_API_KEY"]
    return ServerSettings(**changes, decode=given(args))


def check_port(port: int) -> None:
    """``--port`` must be a real TCP port (uvicorn would listen on a random one for 0, and on
    ``port % 65536`` for a larger one)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port: must be in [1, 65535], got {port}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(specs: list[str], settings: ServerSettings) -> tuple[FastAPI, Optional[DecodeProcesses]]:
    """Validate the settings (before any model loads or process starts), load the models (on
    CPU), start the decoding processes (unless ``worker_processes`` is 0), build the app."""
    settings.validate()
    models = load_models(specs)
    workers, threads = decoding_threads(settings, [])  # [] = models on CPU
    processes = None
    if settings.worker_processes:
        findings = settle_precision(models, settings.decode, threads)
        log.info("starting %d decoding process(es)", workers)
        processes = DecodeProcesses(specs, workers, threads, settings.decode, precision=findings)
    try:
        return create_app(models, settings, processes.run_batch if processes else None), processes
    except Exception:
        if processes is not None:
            processes.close()
        raise


def settle_precision(models: dict[str, Any], decode: dict[str, Any], threads: int) -> dict[str, Any]:
    """Resolve each model's decoding precision here, once, at the decoding processes' thread
    count, and log it; returns the probe findings the processes adopt (``dtype: auto`` then
    means one precision in all of them)."""
    import torch

    from mt.decode import precision
    from mt.decode.variant import choose_precision, resolve_device
    from serve.engine import loaded_options

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, loaded in models.items():
            opts = loaded_options(loaded, decode)
            choice = choose_precision(opts.dtype, resolve_device(opts.device), opts.int8, loaded.model)
            log.info("model %s: decoding in %s (%s)", name, choice.dtype, choice.reason)
    finally:
        torch.set_num_threads(before)
    return precision.findings()


def log_startup(app: FastAPI, settings: ServerSettings, in_processes: bool, host: str) -> None:
    """What is served, how it decodes, and a warning for a public address without a key."""
    for name, engine in app.state.engines.items():
        flag = " (RANDOM INIT: output is gibberish)" if engine.meta.get("random_init") else ""
        log.info("model %s: %s->%s%s", name, engine.src_lang, engine.tgt_lang, flag)
        dm = getattr(engine.translator, "model", None)  # in-process decoding (else settle_precision logged it)
        if dm is not None and hasattr(dm, "precision"):
            log.info("model %s: decoding in %s (%s)", name, dm.describe(), dm.precision.reason)
    workers, threads = decoding_threads(settings, [])
    log.info("decoding: %d worker %s x %d torch thread(s), max %d batch tokens, %g ms wait; model %s",
             workers, "process(es)" if in_processes else "thread(s)", threads, settings.max_batch_tokens,
             settings.max_wait_ms, ", ".join(f"{k}={v}" for k, v in settings.decode.items()) or "each model's stored defaults")
    log.info("connections: at most %d, headers %d bytes within %g s, body within %g s, keep-alive %g s; "
             "shutdown: %g s for requests in progress", settings.max_connections, settings.max_header_bytes,
             settings.header_timeout_s, settings.body_timeout_s, settings.keepalive_timeout_s,
             settings.shutdown_timeout_s)
    if not is_loopback(host) and settings.api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach it can use it", host)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` inside the block (from the main thread; elsewhere a
    no-op). By default it kills the process outright: no ``finally`` and no exit handlers run,
    so decoding processes started during a slow start-up would outlive it. As an exception,
    the interpreter exits normally, and multiprocessing's exit handler terminates them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum: int, frame: Optional[FrameType]) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, ending on SIGTERM/SIGINT so that :func:`serve_cli` can clean up.

    uvicorn shuts down gracefully on these signals (stops accepting, gives the requests in
    progress ``timeout_graceful_shutdown``, runs the app's lifespan shutdown) and then raises
    the signal again with the default handler restored: for SIGTERM that kills the process
    before any ``finally`` runs, which left busy decoding processes orphaned. Here the server
    returns normally instead, and ``on_signal`` runs as the signal arrives (``/ready`` then
    says "shutting down" while the requests in progress finish).
    """

    def __init__(self, config: uvicorn.Config, on_signal: Optional[Callable[[], None]] = None) -> None:
        super().__init__(config)
        self.on_signal = on_signal
        self.signals: list[int] = []  # the signals that ended the server

    def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
        if self.on_signal is not None:
            self.on_signal()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # what uvicorn would raise again on the way out: the shutdown is already done
            captured = getattr(self, "_captured_signals", [])
            self.signals = list(captured)
            captured.clear()


def serve_cli(args: Any) -> int:
    """``mt serve``: load the models and run uvicorn until SIGTERM/SIGINT; then a bounded
    shutdown (``--shutdown-timeout-s`` for the requests in progress, then the decoding
    processes are stopped) that leaves no decoding process behind."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_port(args.port)
        settings = settings_from_args(args)
        with sigterm_exits():  # while the models load (uvicorn handles the signals afterwards)
            app, processes = build_server(args.model, settings)
    except (ValueError, RuntimeError, OSError) as e:  # OSError: a missing model file or shortlist
        print(f"mt serve: error: {e}", file=sys.stderr)
        return 2
    log_startup(app, settings, processes is not None, args.host)
    # with worker threads (--worker-processes 0) the event loop shares the GIL with their
    # beam-search bookkeeping; at Python's default 5 ms switch interval responses and new
    # requests wait behind it (worker processes leave it to the HTTP side)
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    state = app.state.server
    server = GracefulServer(uvicorn_config(app, settings, args.host, args.port),
                            on_signal=lambda: setattr(state, "ready", False))
    try:
        server.run()
    finally:
        if processes is not None:
            # their batches were cancelled with the requests: a process still busy after
            # this is terminated (and killed), so none outlives the server
            processes.close(timeout=STOP_PROCESSES_S)
    if server.signals:
        log.info("stopped by signal %d", server.signals[-1])
    return 0
