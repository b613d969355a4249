"""Server limits and batching knobs, in one place so the CLI, the app and the tests agree."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional



@dataclass(frozen=True)
class ServerSettings:
    """Everything configurable about the server (the models are passed separately).

    Request limits bound the work a single request can cause; they are also written into the
    OpenAPI schema, so clients see them. ``max_tokens_per_text`` must stay below the model's
    ``max_positions`` (checked per model at startup).
    """

    # ---- request limits
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_tokens_per_text: int = 256  # SentencePiece tokens per sentence (longer ones are cut; before the EOS)
    max_body_bytes: int = 256 * 1024  # whole request body, checked on Content-Length and streamed
    max_beam: int = 16
    max_output_length: int = 512
    request_timeout_s: float = 30.0  # per request, queueing included -> 504

    # ---- request cost and fair scheduling (issue 16; serve/engine.py, serve/batcher.py)
    # A request's cost is the most decoder row-steps it may take: the sum over its texts of
    # beam (or n_best samples) x (maximum output length + 1), the maximum output length being
    # max_length or the model's a * source tokens + b. Over max_request_cost: 413 before it is
    # queued. The default admits 64 texts of 30 tokens at beam 16 (48,128) or 7 texts of 256
    # tokens at beam 16, max_length 512 (57,456; 8 would be 65,664), and refuses 64 texts of
    # 256 tokens at beam 16, max_length 512 (525,312), which kept both decoding processes of
    # the 2-core reference machine busy for ~150 s.
    max_request_cost: int = 65536
    # A batch holds at most max_batch_cost row-steps: a costlier request is decoded in chunks
    # that take turns with the other queued requests, so a small request waits for a chunk,
    # not for the whole big request (a single text is never split); with several workers,
    # one is kept for small requests while they arrive. 4 texts at beam 16 and max_length
    # 512 make a chunk: 1 text per chunk took 1.8x as long per text on the tiny dev model.
    max_batch_cost: int = 32768

    # ---- micro-batching
    max_batch_tokens: int = 2048  # source tokens merged into one batched search
    max_wait_ms: float = 5.0  # how long the first queued request waits for company
    max_queue: int = 1024  # queued requests before new ones get 503
    # decoding: `workers` threads take batches from the queue at once (None: 2 on a CPU with
    # at least 2 threads, else 1) and share `threads` torch threads (None: torch's default,
    # the number of cores), `threads // workers` each. Two workers overlap one batch's Python
    # bookkeeping with the other's matrix products (serve/batcher.py).
    workers: Optional[int] = None
    threads: Optional[int] = None
    # 1: `mt serve` runs each worker in its own process (own GIL; serve/processes.py);
    # 0: threads inside the server process (always so for create_app without a `decode`)
    worker_processes: int = 1
    # Python's GIL switch interval while `mt serve` runs (process-wide; Python's default is 5).
    # With worker threads the event loop needs the GIL to answer and admit requests while two
    # workers run beam-search bookkeeping; at 1 ms, C=32 throughput was 13% higher on the 2-core
    # reference VM (measured with threads, before worker processes became the default).
    switch_interval_ms: float = 1.0

    # ---- decoding: DecodeOptions fields given to `mt serve` (--beam, --alpha, --dtype,
    # --int8, --shortlist, --no-pack ...). Each model decodes with the defaults stored in its
    # directory with these on top; a request may override beam, alpha, n_best, max length.
    decode: dict[str, Any] = field(default_factory=dict)

    # ---- access
    api_key: Optional[str] = None  # None = open; else required on every route but /health, /ready

    # ---- connections and shutdown (issue 16; serve/connections.py, serve/cli.py). What one
    # client can hold before the app sees its request: without these, a 64 MB header was read
    # into memory and clients sending a byte every few seconds kept their connections forever.
    max_connections: int = field(default=512, metadata={"help": "open connections; a new one over the limit "
                                 "closes the longest-idle one (no request in progress), else gets 503"})
    max_header_bytes: int = field(default=16 * 1024, metadata={"help": "request line + headers of one request "
                                  "(431 over it)"})
    header_timeout_s: float = field(default=10.0, metadata={"help": "from a connection's opening (between requests: "
                                    "the next request's first byte) until its headers are complete (408 after it)"})
    body_timeout_s: float = field(default=30.0, metadata={"help": "from the end of the headers until the whole "
                                  "body is received (408 after it)"})
    keepalive_timeout_s: float = field(default=5.0, metadata={"help": "an idle connection between requests is "
                                       "closed after this long"})
    shutdown_timeout_s: float = field(default=10.0, metadata={"help": "on SIGTERM/SIGINT, requests in progress "
                                      "get this long to finish, then are answered 503; the decoding processes "
                                      "are stopped after them (at most ~3 s more)"})

    def replace(self, **changes) -> "ServerSettings":
        return dataclasses.replace(self, **changes)


    def validate(self) -> None:
        """Raise ``ValueError`` naming the first nonsensical setting."""
        self._validate_serving()
        for name in ("max_texts", "max_chars", "max_tokens_per_text", "max_body_bytes", "max_beam",
                     "max_output_length", "max_batch_tokens", "max_queue", "max_request_cost",
                     "max_batch_cost"):
            if getattr(self, name) < 1:
                raise ValueError(f"settings.{name}: must be >= 1, got {getattr(self, name)}")
        beam = self.decode.get("beam")
        if beam is not None and beam > self.max_beam:
            raise ValueError(f"--beam: {beam} exceeds --max-beam={self.max_beam}")
        if self.request_timeout_s <= 0 or self.max_wait_ms < 0:
            raise ValueError("settings.request_timeout_s must be > 0 and max_wait_ms >= 0")
        if self.worker_processes not in (0, 1):
            raise ValueError(f"settings.worker_processes: must be 0 or 1, got {self.worker_processes}")
        if not 0.01 <= self.switch_interval_ms <= 100:
            raise ValueError(f"settings.switch_interval_ms: must be in [0.01, 100], got {self.switch_interval_ms}")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"settings.{name}: must be >= 1, got {value}")
        from mt.decode.options import check

        check(self.decode)
        if self.api_key is not None and not self.api_key:
            raise ValueError("settings.api_key: must not be empty (use None for no key)")

    def _validate_serving(self) -> None:
        """Every float setting finite (``nan`` compares false with every bound, so it slipped
        through the checks of :meth:`validate`: ``--request-timeout-s nan`` made every
        translation a 500), the connection and shutdown limits, and a sendable API key."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag(f.name)}: must be a finite number, got {value}")
        for name in ("max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)}: must be >= 1, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s", "shutdown_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{flag(name)}: must be > 0, got {getattr(self, name)}")
        key = self.api_key
        # clients send the key in an HTTP header, which carries ASCII only (httpx, requests and
        # browsers refuse or mangle anything else), so such a key could never be sent
        if key and (not all(" " <= c <= "~" for c in key) or key != key.strip()):
            raise ValueError("API key (--api-key or MT_API_KEY): must be printable ASCII without leading or "
                             "trailing spaces, since clients send it in an HTTP header")


def flag(name: str) -> str:
    """The ``mt serve`` flag of settings field ``name`` (``header_timeout_s`` → ``--header-timeout-s``)."""
    return "--" + name.replace("_", "-")


def finite_float(text: str) -> float:
    """argparse type for the float settings: a finite number (``nan``/``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def add_arguments(parser) -> None:
    """Add the decoding flags (:func:`mt.decode.options.add_arguments`, stored in
    ``decode``) and ``--max-texts`` … ``--shutdown-timeout-s`` (one per field but ``api_key``)
    to an argparse parser; ``serve.cli.settings_from_args`` reads them back. Defaults stay
    None, meaning "the ServerSettings default"."""
    from mt.decode.options import add_arguments as add_decode_arguments

    add_decode_arguments(parser, ("search", "model"))
    group = parser.add_argument_group("server limits and batching")
    for f in dataclasses.fields(ServerSettings):
        if f.name in ("api_key", "decode"):
            continue
        kind = float if isinstance(f.default, float) else int  # workers, threads: None -> int
        default = f"(default {'auto' if f.default is None else f.default})"
        group.add_argument(
            flag(f.name), dest=f.name, type=finite_float if kind is float else int, default=None,
            metavar=kind.__name__.upper(), help=f"{f.metadata['help']} {default}" if "help" in f.metadata else default,
        )
