"""``mt serve`` / ``python -m serve``: settings from the flags, the models, decoding
processes, then uvicorn until interrupted."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from typing import Any, Optional

from fastapi import FastAPI

from serve.app import create_app
from serve.modelspecs import load_models
from serve.processes import DecodeProcesses
from serve.settings import ServerSettings
from serve.state import decoding_threads

log = logging.getLogger("mt.serve")


def settings_from_args(args: Any) -> ServerSettings:
    """Settings from CLI arguments (any attribute named like a settings field) and MT_API_KEY."""
    from mt.decode.options import given

    fields = ServerSettings.__dataclass_fields__
    changes = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    changes.setdefault("api_key", os.environ.get("MT_API_KEY") or None)
    return ServerSettings(**changes, decode=given(args))


def _is_loopback(host: str) -> bool:
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
        log.info("starting %d decoding process(es)", workers)
        processes = DecodeProcesses(specs, workers, threads, settings.decode)
    try:
        return create_app(models, settings, processes.run_batch if processes else None), processes
    except Exception:
        if processes is not None:
            processes.close()
        raise


def log_startup(app: FastAPI, settings: ServerSettings, in_processes: bool, host: str) -> None:
    """What is served, how it decodes, and a warning for a public address without a key."""
    for name, engine in app.state.engines.items():
        flag = " (RANDOM INIT: output is gibberish)" if engine.meta.get("random_init") else ""
        log.info("model %s: %s->%s%s", name, engine.src_lang, engine.tgt_lang, flag)
    workers, threads = decoding_threads(settings, [])
    log.info("decoding: %d worker %s x %d torch thread(s), max %d batch tokens, %g ms wait; model %s",
             workers, "process(es)" if in_processes else "thread(s)", threads, settings.max_batch_tokens,
             settings.max_wait_ms, ", ".join(f"{k}={v}" for k, v in settings.decode.items()) or "each model's stored defaults")
    if not _is_loopback(host) and settings.api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach it can use it", host)


def serve_cli(args: Any) -> int:
    """``mt serve``: load the models and run uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    try:
        app, processes = build_server(args.model, settings)
    except (ValueError, RuntimeError, OSError) as e:  # OSError: a missing model file or shortlist
        print(f"mt serve: error: {e}", file=sys.stderr)
        return 2
    log_startup(app, settings, processes is not None, args.host)
    # with worker threads (--worker-processes 0) the event loop shares the GIL with their
    # beam-search bookkeeping; at Python's default 5 ms switch interval responses and new
    # requests wait behind it (worker processes leave it to the HTTP side)
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        if processes is not None:
            processes.close()
    return 0
